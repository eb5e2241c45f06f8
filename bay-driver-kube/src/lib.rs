//! `ContainerDriver` for Kubernetes: a Pod and a PVC per ship (kube, k8s-openapi).
//!
//! Not implemented yet: this crate is an honest skeleton. It will hold the Kubernetes driver,
//! tested against a simulated API server (no cluster can run on the development machines).
//! bay-server's factory reports "the kubernetes driver is not implemented yet" until it lands.
