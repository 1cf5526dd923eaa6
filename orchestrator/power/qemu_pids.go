package power

// PIDs returns the process id of each running QEMU worker, by worker id
// (the energy package's cpu-time model reads their CPU time).
func (q *QEMU) PIDs() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]int, len(q.procs))
	for id, cmd := range q.procs {
		if cmd.Process != nil {
			out[id] = cmd.Process.Pid
		}
	}
	return out
}
