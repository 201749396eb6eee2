package kubetest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal kills the child when the test binary dies, so an interrupted test run does
// not leave etcd or kube-apiserver holding ports.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
