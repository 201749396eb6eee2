//go:build integration && !race

package kubernetes_test

const raceEnabled = false
