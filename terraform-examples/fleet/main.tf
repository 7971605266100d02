# A fleet: one trust domain, one deployment with a cluster per region, and config at each level.
# Servers join with the join tokens made here; every config change waits until the servers
# applied it (wait_for_rollout), through a canary stage when staged_rollout is on.

resource "spirl_trust_domain" "fleet" {
  name = var.trust_domain
}

# Key lifetimes for every server of the trust domain. The apply returns once every reachable
# server applied the change, or fails naming the servers that refused it.
resource "spirl_trust_domain_config" "fleet" {
  trust_domain_id = spirl_trust_domain.fleet.id
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
    create = var.rollout_timeout
    update = var.rollout_timeout
  }
}

resource "spirl_trust_domain_deployment" "prod" {
  name            = "prod"
  trust_domain_id = spirl_trust_domain.fleet.id
}

resource "spirl_cluster" "region" {
  for_each                   = var.clusters
  name                       = each.key
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
}

# The deployment's rollout policy, one section: other sections of the deployment's scope (say
# its KeyManager) can be owned by another team's configuration with their own
# spirl_config_section. Changing only the policy is not sent to servers, so it does not wait.
resource "spirl_config_section" "rollout_policy" {
  count    = var.staged_rollout ? 1 : 0
  scope    = "trust-domain-deployment"
  scope_id = spirl_trust_domain_deployment.prod.id
  section  = "Rollout"
  yaml     = <<-YAML
    section: Rollout
    schema: v1
    spec:
      stages:
        - name: canary
          servers: 1
          bake: ${var.canary_bake}
      onFailure: halt
  YAML
}

# One single-use token per cluster for its first server:
#   SPIRL_JOIN_TOKEN="$(terraform output -json join_tokens | jq -r '.["eu-west"]')" \
#     spirl-tds run --trust-domain-deployment <deployment_id> --cluster <cluster id> ...
# A server needs it once; destroying an unused token revokes it (a used one is left alone).
resource "spirl_join_token" "region" {
  for_each                   = var.clusters
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
  ttl                        = "1h"
}

output "deployment_id" {
  value = spirl_trust_domain_deployment.prod.id
}

output "cluster_ids" {
  value = { for name, cluster in spirl_cluster.region : name => cluster.id }
}

output "join_tokens" {
  value     = { for name, token in spirl_join_token.region : name => token.token }
  sensitive = true
}
