package sim

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/microfaas/microfaas/lab/report"
	"github.com/microfaas/microfaas/orchestrator"
)

// ProfileFile is the profile's copy in a simulated run folder.
const ProfileFile = "profile.yaml"

// createFiles makes the run folder: the experiment file and the profile
// as given, results.csv (the orchestrator's recorder, as a measured run),
// timeline.csv and, with a power model, meter.csv. Writes are buffered: a
// simulation is not interrupted half-way as a measured run can be.
func (s *sim) createFiles() error {
	dir := s.cfg.Dir
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("run folder %s exists and is not empty: choose another --out", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, report.ExperimentFile), s.cfg.File, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ProfileFile), s.cfg.ProfileFile, 0o644); err != nil {
		return err
	}
	open := func(name string) (*bufio.Writer, error) {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		b := bufio.NewWriterSize(f, 1<<16)
		s.files = append(s.files, f)
		s.bufs = append(s.bufs, b)
		return b, nil
	}
	rb, err := open(report.ResultsFile)
	if err != nil {
		return err
	}
	if s.results, err = orchestrator.NewCSVRecorder(rb, true); err != nil {
		return err
	}
	tb, err := open(report.TimelineFile)
	if err != nil {
		return err
	}
	s.timeline = csv.NewWriter(tb)
	s.timeline.Write([]string{"worker", "state", "start_unix_ns", "end_unix_ns", "invocation"})
	if s.cfg.Profile.Power.Has() {
		mb, err := open(report.MeterFile)
		if err != nil {
			return err
		}
		s.meter = csv.NewWriter(mb)
		s.meter.Write([]string{"t_unix_ns", "watts", "source"})
	}
	return nil
}

// flush writes what is buffered.
func (s *sim) flush() error {
	var errs []error
	for _, w := range []*csv.Writer{s.timeline, s.meter} {
		if w != nil {
			w.Flush()
			errs = append(errs, w.Error())
		}
	}
	for _, b := range s.bufs {
		errs = append(errs, b.Flush())
	}
	return errors.Join(errs...)
}

func (s *sim) closeFiles() {
	for _, f := range s.files {
		f.Close()
	}
	s.files = nil
}
