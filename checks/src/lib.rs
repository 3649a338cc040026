//! Checks of the repository itself, in `tests/`: `compose.yaml`, the Dockerfile and
//! `docs/configuration.md` against what the `handlers` and `gateway` binaries accept, the
//! compose stacks run for real, and system tests that span the repository (the run
//! script, renamed variables, the gateway binary under attack). Nothing to use here.
