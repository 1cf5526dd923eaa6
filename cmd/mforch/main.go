// Command mforch is the MicroFaaS orchestrator: it powers workers on and off,
// queues invocations, hands them to workers, and records the results.
//
//	mforch serve [--cluster FILE] --kernel bzImage --initrd initramfs.cpio
//	mforch demo  --kernel bzImage --initrd initramfs.cpio [--workers 3 --invocations 36]
//	mforch status [--addr http://127.0.0.1:8080]
//	mforch logs WORKER [--boot N|--invocation ID] [--follow]
//	mforch deploy NAME IMAGE | --delete NAME | --list [--addr URL]
//	mforch loadgen [--addr URL] [-n 170] [--arrival poisson --rate 2]
//	mforch meter read|calibrate [--driver wattsup --device /dev/ttyUSB0 ...]
//	mforch experiment FILE [--out DIR]
//	mforch report RUN [RUN...] [--out report.html] [--tco COSTS.yaml]
//	mforch profile RUN [--out profile.yaml]
//	mforch simulate FILE|RUN --profile PROFILE [--workers N] [--policy P] [--trace CSV]
package main

import "github.com/microfaas/microfaas/internal/cli"

var commands = []cli.Command{
	{Name: "serve", Summary: "run the orchestrator service for a cluster", Run: runServe},
	{Name: "demo", Summary: "boot a local cluster of QEMU workers, run the workload suite, print and plot the results", Run: runDemo},
	{Name: "status", Summary: "show a running mforch's workers, queue depth and recent failures", Run: runStatus},
	{Name: "logs", Summary: "show a worker boot's kernel, mfinit and console log from a running mforch (--follow)", Run: runLogs},
	{Name: "deploy", Summary: "deploy a function image on a running mforch (pulled for every architecture of its cluster), remove or list deployments", Run: runDeploy},
	{Name: "loadgen", Summary: "drive a running mforch with the original experiment's seeded workload", Run: runLoadgen},
	{Name: "meter", Summary: "read a power meter live, or calibrate the per-state power of a board", Run: runMeter},
	{Name: "experiment", Summary: "run an experiment file and record a run folder (results, timeline, meter, summary)", Run: runExperiment},
	{Name: "report", Summary: "turn run folders into an HTML report and a summary table, comparing runs; --tco adds the boards-vs-VM-host energy and cost comparison", Run: runReport},
	{Name: "profile", Summary: "fit a worker profile (boot, shutdown, exec times, per-state power) to a recorded run folder", Run: runProfile},
	{Name: "simulate", Summary: "run an experiment on simulated workers drawn from a profile, with the real scheduler on a simulated clock", Run: runSimulate},
}

func main() { cli.Main("mforch", commands) }
