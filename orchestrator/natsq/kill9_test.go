package natsq

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHelperInstance is not a test: run by TestKill9Instance as a child
// process (MF_NATSQ_HELPER set), it is one mforch instance on the NATS
// server the parent names, printing "ready", then "running N" while its
// workers run jobs and "ran KEY" for each run, until it is killed.
func TestHelperInstance(t *testing.T) {
	url := os.Getenv("MF_NATSQ_HELPER")
	if url == "" {
		t.Skip("only as TestKill9Instance's child process")
	}
	onRun = func(k string) { fmt.Printf("ran %s\n", k) }
	in := newInstance(t, "child", url, os.Getenv("MF_NATSQ_KEY"), instanceConfig{workers: 3, ackWait: time.Second, idle: time.Hour})
	fmt.Println("ready")
	for {
		fmt.Printf("running %d\n", in.orch.Status().Running)
		time.Sleep(10 * time.Millisecond)
	}
}

// `kill -9` of an instance, a real process, while its workers run jobs:
// its invocations finish on the others within ack wait + one job time,
// and the re-executions are counted (runs in both processes minus
// invocations).
func TestKill9Instance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	ns := startNATS(t, t.TempDir(), 0)
	key := keyFile(t)
	const ackWait, job = time.Second, 300 * time.Millisecond
	child := exec.Command(os.Args[0], "-test.run=^TestHelperInstance$", "-test.count=1")
	child.Env = append(os.Environ(), "MF_NATSQ_HELPER="+ns.url(), "MF_NATSQ_KEY="+key)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	var mu sync.Mutex
	childRuns := map[string]int{}
	ready, busy := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		var readyOnce, busyOnce sync.Once
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "ready":
				readyOnce.Do(func() { close(ready) })
			case strings.HasPrefix(line, "running ") && line != "running 0":
				busyOnce.Do(func() { close(busy) })
			case strings.HasPrefix(line, "ran "):
				mu.Lock()
				childRuns[strings.TrimPrefix(line, "ran ")]++
				mu.Unlock()
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("the child instance did not start")
	}
	var ins []*instance
	for i := 0; i < 2; i++ {
		ins = append(ins, newInstance(t, fmt.Sprintf("mforch%d", i), ns.url(), key, instanceConfig{workers: 3, ackWait: ackWait, idle: time.Hour}))
	}
	prefix := fmt.Sprintf("kill9-%d", time.Now().UnixNano())
	const n = 60
	invs := submitAll(t, ins, prefix, n, int(job/time.Millisecond), 8)
	select {
	case <-busy:
	case <-time.After(20 * time.Second):
		t.Fatal("the child never ran a job")
	}
	if err := child.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	child.Wait()
	killed := time.Now()
	waitAll(t, invs, prefix, 30*time.Second)
	took := time.Since(killed)
	mu.Lock()
	defer mu.Unlock()
	total, inChild := 0, 0
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		total += runCount(k) + childRuns[k]
		inChild += childRuns[k]
	}
	reruns := total - n
	t.Logf("kill -9 of an instance with jobs running: %d runs in it, all %d invocations finished %s after the kill (ack wait %s, job %s); re-executions %d",
		inChild, n, took.Round(time.Millisecond), ackWait, job, reruns)
	if inChild == 0 || reruns < 1 {
		t.Errorf("the child ran %d, re-executions %d: the kill hit no running job", inChild, reruns)
	}
	if reruns > 3 {
		t.Errorf("%d re-executions, more than the child's 3 workers held", reruns)
	}
}
