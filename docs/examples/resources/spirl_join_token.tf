# A token for the first start of a server in the east cluster:
#   spirl-tds run --join-token-file <file holding the token> --trust-domain-deployment <id> ...
resource "spirl_join_token" "east_bootstrap" {
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
  ttl                        = "30m"
}

output "east_join_token" {
  value     = spirl_join_token.east_bootstrap.token
  sensitive = true
}
