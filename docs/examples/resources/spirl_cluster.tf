resource "spirl_cluster" "east" {
  name                       = "east"
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
}
