"""The local AWS emulator: moto extended in-process (moto_ext) so that `infra/` applies against it."""
