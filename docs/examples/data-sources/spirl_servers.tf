data "spirl_servers" "prod" {
  trust_domain_deployment_id = data.spirl_trust_domain_deployment.prod.id
}

# Servers that have not applied the latest config, or refused it.
output "lagging_servers" {
  value = [
    for s in data.spirl_servers.prod.servers : s.id
    if s.state != "HEALTHY" || s.applied_version != s.desired_version
  ]
}
