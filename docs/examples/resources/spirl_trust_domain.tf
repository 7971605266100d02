resource "spirl_trust_domain" "example" {
  name = "example.org"
}
