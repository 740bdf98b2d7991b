// Command pause is the sandbox container of the real node's pods: it holds the pod's
// namespaces, reaps orphaned children (it is PID 1 when the pod shares its PID namespace)
// and exits on SIGINT or SIGTERM. Built here because no registry is reachable to pull one.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
