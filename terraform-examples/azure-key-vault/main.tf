# The vendor page's Terraform snippet, made complete: the objects it refers to, and the
# KeyManager section that moves the cluster's signing keys to Azure Key Vault.

resource "spirl_trust_domain" "example" {
  name = var.trust_domain
}

resource "spirl_trust_domain_deployment" "prod" {
  name            = "prod"
  trust_domain_id = spirl_trust_domain.example.id
}

resource "spirl_cluster" "my_cluster" {
  name                       = "my-cluster"
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
}

resource "spirl_cluster_config" "key_manager" {
  cluster_id = spirl_cluster.my_cluster.id
  sections = {
    KeyManager = <<-YAML
      section: KeyManager
      schema: v1
      spec:
        extensions:
          azureKeyVault:
            vaultURL: "${var.vault_url}"
            keyTags:
              team: identity
    YAML
  }
}

output "cluster_id" {
  value = spirl_cluster.my_cluster.id
}

output "config_version" {
  value = spirl_cluster_config.key_manager.version
}
