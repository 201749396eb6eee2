//go:build race

package kubernetes_test

const raceEnabled = true
