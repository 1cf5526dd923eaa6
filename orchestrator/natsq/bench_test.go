package natsq

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/microfaas/microfaas/orchestrator"
)

// BenchmarkSharedQueue measures 1, 2 and 4 orchestrators sharing one
// JetStream queue (one in-process nats-server, file storage), each with 4
// warm in-process workers running a function that does nothing. 64
// clients in a closed loop submit through the instances in turn and wait
// for the result: publish and PubAck, pull, the job, the result stored
// (create-only) and acknowledged, the result watched back by the
// submitting instance. Everything shares this host's cores: more instances
// add work, not hardware, so the figure is the queue's cost per
// invocation, not a cluster's throughput. The server's sync setting is in
// the case name: sync=default is JetStream's (fsync every 2 min, writes in
// the page cache), sync=always fsyncs every write.
func BenchmarkSharedQueue(b *testing.B) {
	for _, c := range []struct {
		instances int
		always    bool
	}{{1, false}, {2, false}, {4, false}, {1, true}} {
		mode := "default"
		if c.always {
			mode = "always"
		}
		b.Run(fmt.Sprintf("instances=%d/sync=%s", c.instances, mode), func(b *testing.B) {
			ns := startNATSOpts(b, &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(),
				NoLog: true, NoSigs: true, SyncAlways: c.always})
			key := keyFile(b)
			var ins []*instance
			for i := 0; i < c.instances; i++ {
				ins = append(ins, newInstance(b, fmt.Sprintf("mforch%d", i), ns.url(), key,
					instanceConfig{workers: 4, idle: time.Hour, quiet: true}))
			}
			// Warm up: boot every worker once.
			var warm []*orchestrator.Invocation
			for i := 0; i < 8*c.instances; i++ {
				inv, err := ins[i%len(ins)].orch.Submit("test_nap", napArgs("warm", 0), time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				warm = append(warm, inv)
			}
			for _, inv := range warm {
				<-inv.Done()
			}
			const clients = 64
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for cl := 0; cl < clients; cl++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1)) - 1
						if i >= b.N {
							return
						}
						t0 := time.Now()
						inv, err := ins[i%len(ins)].orch.Submit("test_nap", napArgs("bench", 0), time.Minute)
						if err != nil {
							b.Error(err)
							return
						}
						<-inv.Done()
						if inv.Err != nil {
							b.Error(inv.Err)
						}
						lat[i] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "inv/s")
			b.ReportMetric(p(0.50), "p50-µs")
			b.ReportMetric(p(0.99), "p99-µs")
			reruns := 0
			for _, in := range ins {
				reruns += in.q.Stats().Duplicates
			}
			b.ReportMetric(float64(reruns), "reruns")
		})
	}
}
