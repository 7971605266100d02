# Several trust domain servers (e.g. one per region) share the same JWT signing keys in one
# Key Vault. The key name comes from the template; the regex recovers the key id from a key
# name and must capture exactly the key id: for trust domain example.org the template renders
# "spire-example-org-<key id>", so the regex anchors the whole "spire-example-org-" prefix,
# built here from the trust domain (its characters, [a-z0-9._-] with "." made "-", are literal
# in a regex). The control plane checks the regex against the real trust domain's names (the
# provider at plan time): the SPIRE doc's "^spire-[^-]+-(.+)$" captures "org-<key id>" for
# example.org and is refused with what it captured; for a one-label trust domain it is right.

locals {
  key_name_prefix = "spire-${replace(var.trust_domain, ".", "-")}-"
}

resource "spirl_trust_domain" "example" {
  name = var.trust_domain
}

resource "spirl_trust_domain_deployment" "global" {
  name            = "global"
  trust_domain_id = spirl_trust_domain.example.id
}

resource "spirl_cluster" "eu" {
  name                       = "eu-west"
  trust_domain_deployment_id = spirl_trust_domain_deployment.global.id
}

resource "spirl_cluster" "us" {
  name                       = "us-east"
  trust_domain_deployment_id = spirl_trust_domain_deployment.global.id
}

# Set once at deployment scope: every cluster of the deployment inherits it.
resource "spirl_trust_domain_deployment_config" "shared_keys" {
  trust_domain_deployment_id = spirl_trust_domain_deployment.global.id
  sections = {
    KeyManager   = <<-YAML
      section: KeyManager
      schema: v1
      spec:
        extensions:
          azureKeyVault:
            vaultURL: "https://shared-keys-vault.vault.azure.net/"
            keyType: ec-p256
            sharedKeys:
              keyNameTemplate: 'spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}'
              keyIdExtractionRegex: '^${local.key_name_prefix}(.+)$'
    YAML
    KeyLifecycle = <<-YAML
      section: KeyLifecycle
      schema: v1
      spec:
        jwtKeyTTL: 24h
    YAML
  }
}

output "deployment_id" {
  value = spirl_trust_domain_deployment.global.id
}

output "cluster_ids" {
  value = [spirl_cluster.eu.id, spirl_cluster.us.id]
}
