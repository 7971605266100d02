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

variable "clusters" {
  description = "One cluster per region; each gets a join token for its first server."
  type        = set(string)
  default     = ["eu-west", "us-east"]
}

variable "staged_rollout" {
  description = "Roll config changes out in stages (a canary first) instead of to every server at once."
  type        = bool
  default     = true
}

variable "canary_bake" {
  description = "How long the canary must stay HEALTHY on a change before every server gets it."
  type        = string
  default     = "10m"
}

variable "rollout_timeout" {
  description = "How long an apply waits for the servers to apply a change (wait_for_rollout)."
  type        = string
  default     = "30m"
}
