# The east cluster's servers use their own vault (cluster beats deployment).
resource "spirl_cluster_config" "east" {
  cluster_id = spirl_cluster.east.id
  sections = {
    KeyManager = <<-YAML
      section: KeyManager
      schema: v1
      spec:
        extensions:
          azureKeyVault:
            vaultURL: "https://east-vault.vault.azure.net/"
            keyTags:
              team: identity
    YAML
  }
}
