data "spirl_trust_domain_deployment" "prod" {
  name            = "prod"
  trust_domain_id = data.spirl_trust_domain.by_name.id
}
