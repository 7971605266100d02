# Connection settings. Leave them unset to use the environment: the provider reads
# SPIRL_ENDPOINT and SPIRL_TOKEN itself (or set TF_VAR_spirl_endpoint / TF_VAR_spirl_token).
variable "spirl_endpoint" {
  description = "Control plane URL, e.g. http://127.0.0.1:8080. Default: $SPIRL_ENDPOINT."
  type        = string
  default     = null
}

variable "spirl_token" {
  description = "Control plane admin token. Default: $SPIRL_TOKEN."
  type        = string
  default     = null
  sensitive   = true
}

variable "trust_domain" {
  description = "SPIFFE trust domain name."
  type        = string
  default     = "example.org"
}
