// Command etcd is the upstream etcd server built from its Go module, for
// envtest (see ../build.sh). It is not part of go.work.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
