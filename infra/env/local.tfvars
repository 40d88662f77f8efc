# `make plan ENV=local`: plan against the local AWS emulator (moto on 127.0.0.1:4566).
environment             = "local"
region                  = "us-east-1"
emulator                = true
dashboard_allowed_cidrs = ["127.0.0.1/32"]
