data "spirl_trust_domain" "by_name" {
  name = "example.org"
}
