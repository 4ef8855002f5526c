// Package smoke holds the smoke test of the Kubernetes test control plane; run it
// with `scripts/k8s-testenv.sh smoke` against a running plane's KUBECONFIG.
package smoke
