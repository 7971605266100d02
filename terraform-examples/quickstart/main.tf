# A trust domain, one deployment, and deployment-wide key lifetimes. Short lifetimes make key
# rotation visible within minutes; the defaults (24h) apply where KeyLifecycle is not set.

resource "spirl_trust_domain" "example" {
  name = var.trust_domain
}

resource "spirl_trust_domain_deployment" "main" {
  name            = "main"
  trust_domain_id = spirl_trust_domain.example.id
}

resource "spirl_trust_domain_deployment_config" "main" {
  trust_domain_deployment_id = spirl_trust_domain_deployment.main.id
  sections = {
    KeyLifecycle = <<-YAML
      section: KeyLifecycle
      schema: v1
      spec:
        x509CATTL: 24h
        jwtKeyTTL: 12h
    YAML
  }
}

# Data sources look objects up by id or by name.
data "spirl_trust_domain" "by_name" {
  name = spirl_trust_domain.example.name
}

output "trust_domain_id" {
  value = data.spirl_trust_domain.by_name.id
}

output "deployment_id" {
  value = spirl_trust_domain_deployment.main.id
}

output "config_version" {
  value = spirl_trust_domain_deployment_config.main.version
}
