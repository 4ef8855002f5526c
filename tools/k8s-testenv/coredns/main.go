// Command coredns is CoreDNS (github.com/coredns/coredns) with only the plugins the
// test node's cluster DNS uses, so that it builds in seconds instead of compiling
// every cloud provider's SDK. This is CoreDNS's documented way to choose plugins
// (core/dnsserver.Directives plus blank imports), as in its own coredns.go.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

// Order matters: it is the order in which plugins see a query, the same relative order as
// CoreDNS's own plugin.cfg.
var directives = []string{
	"bind",
	"ready",
	"health",
	"errors",
	"loadbalance",
	"cache",
	"kubernetes",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
