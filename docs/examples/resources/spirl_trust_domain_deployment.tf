resource "spirl_trust_domain_deployment" "prod" {
  name            = "prod"
  trust_domain_id = spirl_trust_domain.example.id
}
