//go:build tools

// Package apiserver pins kube-apiserver so that `go build k8s.io/kubernetes/cmd/kube-apiserver`
// from this module builds the version sluice's integration tests run against.
package apiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
