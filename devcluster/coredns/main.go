// CoreDNS for the real node's cluster DNS, linking only the plugins the local cluster's
// Corefile (devcluster/scripts/node.sh) uses, plus forward and log for a developer who edits
// it. Upstream's own main links all ~60 plugins, most of them clients of cloud DNS services
// and tracing vendors whose SDKs made CoreDNS the node's slowest build. CoreDNS supports this:
// a program sets dnsserver.Directives and imports the plugins it wants, then runs coremain.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// The order in which the plugins handle a query: upstream's (core/dnsserver/zdirectives.go)
// with the plugins left out removed. metadata, debug, prometheus, dnstap and transfer are
// linked anyway (kubernetes and forward import them), so a Corefile may name them too; a
// Corefile naming any other plugin fails to load.
var directives = []string{
	"metadata",
	"reload",
	"debug",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"dnstap",
	"cache",
	"transfer",
	"kubernetes",
	"loop",
	"forward",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
