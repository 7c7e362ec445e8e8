package clock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// HighWaterFile is the name of the file, inside the data directory, that
// holds the Lamport high-water mark: one decimal line.
const HighWaterFile = "lamport-hw"

// FileReserver stores a Lamport high-water mark in dir/HighWaterFile. Each
// Reserve writes a temporary file, fsyncs it, renames it over the old one and
// fsyncs the directory, so after a crash the file holds either the old or the
// new mark, never a torn one.
type FileReserver struct {
	dir string
}

// OpenFileReserver creates dir if needed and returns its reserver together
// with the stored mark (0 when there is none yet). A file that exists but
// does not hold a mark is an error: starting from 0 could reissue values.
func OpenFileReserver(dir string) (*FileReserver, uint64, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, 0, fmt.Errorf("clock data dir: %w", err)
	}
	r := &FileReserver{dir: dir}
	path := filepath.Join(dir, HighWaterFile)
	b, err := os.ReadFile(path) // #nosec G304 -- operator-supplied data dir
	if errors.Is(err, fs.ErrNotExist) {
		return r, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	hw, perr := strconv.ParseUint(s, 10, 63)
	if perr != nil {
		return nil, 0, fmt.Errorf("%s: corrupt high-water mark %q (remove it only if no value above any previous one can have been issued): %w", path, clip(s), perr)
	}
	return r, hw, nil
}

// Reserve implements Reserver.
func (r *FileReserver) Reserve(hw uint64) error {
	tmp, err := os.CreateTemp(r.dir, HighWaterFile+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after a successful rename
	if _, err := tmp.WriteString(strconv.FormatUint(hw, 10) + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, filepath.Join(r.dir, HighWaterFile)); err != nil {
		return err
	}
	d, err := os.Open(r.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
