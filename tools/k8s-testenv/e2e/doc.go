// Package e2e is Colloquy's end-to-end suite on the real test node (scripts/e2e.sh runs it):
// the chart installed by Helm, images built from the project's Dockerfile, pods on containerd,
// chat turns through Services, PostgreSQL on the host behind a selector-less Service.
package e2e
