# Key lifetimes for every server of every deployment of the trust domain. The apply returns
# once every reachable server applied the change (or fails naming those that refused it).
resource "spirl_trust_domain_config" "example" {
  trust_domain_id = spirl_trust_domain.example.id
  sections = {
    KeyLifecycle = <<-YAML
      section: KeyLifecycle
      schema: v1
      spec:
        x509CATTL: 24h
        jwtKeyTTL: 12h
    YAML
  }
  wait_for_rollout = true
  timeouts = {
    update = "20m"
  }
}
