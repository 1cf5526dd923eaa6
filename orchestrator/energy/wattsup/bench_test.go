package wattsup_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/microfaas/microfaas/orchestrator/energy"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup"
	"github.com/microfaas/microfaas/orchestrator/energy/wattsup/wattsupsim"
)

const dataPacket = "#d,-,18,1234,1203,1027,56,0,0,0,1300,1210,1100,1200,1190,1000,85,100,0,600,1452;\r\n"

// BenchmarkParseSample is the CPU the orchestrator spends per WattsUp
// sample on parsing: one packet through the scanner and ParseData.
func BenchmarkParseSample(b *testing.B) {
	var s wattsup.Scanner
	pkt := []byte(dataPacket)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		for _, p := range s.Feed(pkt) {
			if _, err := wattsup.ParseData(p, wattsup.DefaultFields); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkDriverSample is the driver's whole cost per sample: read
// syscalls on a pty, scanning, parsing, time stamping and emitting. The
// writing side (the meter) runs in the same process, so this is an upper
// bound.
func BenchmarkDriverSample(b *testing.B) {
	m, slave, err := wattsupsim.OpenPTY()
	if err != nil {
		b.Skip(err)
	}
	defer m.Close()
	go io.Copy(io.Discard, m) // the driver's commands
	meter := &wattsup.Meter{Device: slave, Stall: time.Minute}
	got := make(chan struct{}, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go meter.Run(ctx, func(energy.Sample) { got <- struct{}{} })
	time.Sleep(50 * time.Millisecond) // the driver opened the port and flushed it
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			if _, err := m.Write([]byte(dataPacket)); err != nil {
				return
			}
		}
	}()
	for i := 0; i < b.N; i++ {
		<-got
	}
}
