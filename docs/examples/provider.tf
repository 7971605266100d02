terraform {
  required_providers {
    spirl = {
      source  = "spirl/spirl"
      version = "0.1.0"
    }
  }
}

provider "spirl" {
  endpoint        = "http://127.0.0.1:8080" # default: $SPIRL_ENDPOINT
  token           = var.spirl_token         # default: $SPIRL_TOKEN
  request_timeout = 30                      # seconds per request
  max_retries     = 3                       # on 429 and 503
}

variable "spirl_token" {
  type      = string
  sensitive = true
}
