# Two teams share the west cluster's scope: this configuration owns its KeyLifecycle section,
# another one its KeyManager section. No spirl_cluster_config may manage this cluster.
resource "spirl_cluster" "west" {
  name                       = "west"
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
}

resource "spirl_config_section" "west_lifecycle" {
  scope    = "cluster"
  scope_id = spirl_cluster.west.id
  section  = "KeyLifecycle"
  yaml     = <<-YAML
    section: KeyLifecycle
    schema: v1
    spec:
      jwtKeyTTL: 6h
  YAML
}
