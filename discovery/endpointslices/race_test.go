//go:build integration && race

package endpointslices_test

const raceEnabled = true
