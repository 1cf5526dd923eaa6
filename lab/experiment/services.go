package experiment

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/microfaas/microfaas/internal/testsvc"
	"github.com/microfaas/microfaas/runtime/functions"
)

// GuestHost is the host's address as a QEMU user-networking guest sees it.
const GuestHost = "10.0.2.2"

// StartServices starts the named services on loopback (real Redis,
// PostgreSQL and versitygw servers, and an in-process Kafka broker), loads
// the data the generated inputs expect (the bostonautosales database, the
// sample objects), and returns their settings for the cluster's services:
// section. With guest set the settings name the host as QEMU guests see it
// (10.0.2.2), and the Kafka broker advertises that address. stop stops
// them all.
func StartServices(ctx context.Context, names []string, guest bool) (map[string]map[string]string, func(), error) {
	var servers []*testsvc.Server
	var kafka *kfake.Cluster
	stop := func() {
		if kafka != nil {
			kafka.Close()
		}
		testsvc.StopAll(servers, io.Discard)
	}
	settings := map[string]map[string]string{}
	for _, n := range names {
		if n == "kafka" {
			c, err := startKafka(guest)
			if err != nil {
				stop()
				return nil, nil, err
			}
			kafka = c
			settings["kafka"] = map[string]string{"brokers": strings.Join(c.ListenAddrs(), ",")}
			continue
		}
		started, err := testsvc.Start(ctx, n)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("starting the %s service the mix needs (scripts/services/install.sh installs it, or set services: none and drop its functions): %w", n, err)
		}
		s := started[0]
		servers = append(servers, s)
		switch n {
		case "postgres":
			dsn, err := functions.PostgresDSN(s.Settings)
			if err == nil {
				err = functions.SeedPostgres(ctx, dsn)
			}
			if err != nil {
				stop()
				return nil, nil, fmt.Errorf("loading the bostonautosales database: %w", err)
			}
		case "s3":
			if err := functions.SeedS3(ctx, s.Settings); err != nil {
				stop()
				return nil, nil, fmt.Errorf("loading the sample objects: %w", err)
			}
		}
		out := map[string]string{}
		for k, v := range s.Settings {
			if guest {
				v = strings.ReplaceAll(v, "127.0.0.1", GuestHost)
			}
			out[k] = v
		}
		settings[n] = out
	}
	return settings, stop, nil
}

// startKafka starts a one-broker kfake cluster on loopback. For guests its
// listener reports the guest's view of the host as its address, which the
// broker advertises in its metadata, so clients in the guest reconnect to
// an address they can reach.
func startKafka(guest bool) (*kfake.Cluster, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1)}
	if guest {
		opts = append(opts, kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			return advertised{ln}, nil
		}))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting the kafka service: %w", err)
	}
	return c, nil
}

type advertised struct{ net.Listener }

func (a advertised) Addr() net.Addr {
	t := *a.Listener.Addr().(*net.TCPAddr)
	t.IP = net.ParseIP(GuestHost)
	return &t
}
