terraform {
  required_version = ">= 1.5"
  required_providers {
    spirl = {
      source  = "spirl/spirl"
      version = "0.1.0"
    }
  }
}

provider "spirl" {
  endpoint = var.spirl_endpoint
  token    = var.spirl_token
}
