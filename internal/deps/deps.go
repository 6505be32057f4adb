package deps
import (
 _ "github.com/labstack/echo/v4"
 _ "github.com/labstack/echo/v4/middleware"
 _ "github.com/coreos/go-iptables/iptables"
 _ "github.com/redis/go-redis/v9"
 _ "github.com/google/gopacket"
 _ "github.com/google/gopacket/pcapgo"
 _ "github.com/skip2/go-qrcode"
 _ "go.etcd.io/bbolt"
 _ "go.yaml.in/yaml/v3"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/google/go-cmp/cmp"
 _ "golang.org/x/sync/errgroup"
 _ "github.com/vishvananda/netns"
 _ "github.com/vishvananda/netlink"
)
