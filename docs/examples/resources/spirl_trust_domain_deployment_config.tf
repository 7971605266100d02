# The servers of the deployment share their JWT signer key in Azure Key Vault. The key id
# regex must fit the names the template gives in this trust domain, so it is built from the
# trust domain's name (checked against it at plan time).
resource "spirl_trust_domain_deployment_config" "prod" {
  trust_domain_deployment_id = spirl_trust_domain_deployment.prod.id
  sections = {
    KeyManager = <<-YAML
      section: KeyManager
      schema: v1
      spec:
        extensions:
          azureKeyVault:
            vaultURL: "https://shared-keys-vault.vault.azure.net/"
            sharedKeys:
              keyNameTemplate: 'spire-{{ .TrustDomain | replace "." "-" }}-{{ .KeyID }}'
              keyIdExtractionRegex: '^spire-${replace(spirl_trust_domain.example.name, ".", "-")}-(.+)$'
    YAML
  }
}
