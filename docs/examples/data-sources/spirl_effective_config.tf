data "spirl_effective_config" "east" {
  trust_domain_deployment_id = data.spirl_trust_domain_deployment.prod.id
  cluster_id                 = data.spirl_cluster.east.id
}

# Where the KeyManager of the east cluster's servers comes from: "cluster", or a wider scope.
output "east_key_manager_scope" {
  value = try(data.spirl_effective_config.east.sections["KeyManager"].scope, "none (default)")
}
