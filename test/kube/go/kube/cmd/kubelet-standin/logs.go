// containerLogs: serves <root>/<namespace>/<pod>/<container>.log with the
// kubelet's query parameters follow, tailLines and limitBytes.
package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

const tailBlock = 32 * 1024

// tailStart returns the offset where the last n lines of f begin (a final
// newline ends the last line rather than starting another), reading backwards
// in blocks so a long log costs no more memory than one block.
func tailStart(f *os.File, n int64) (int64, error) {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil || end == 0 {
		return 0, err
	}
	buf := make([]byte, tailBlock)
	seen := int64(0)
	for pos := end; pos > 0; {
		size := min(int64(tailBlock), pos)
		pos -= size
		if _, err := f.ReadAt(buf[:size], pos); err != nil {
			return 0, err
		}
		for i := size - 1; i >= 0; i-- {
			if buf[i] != '\n' || pos+i == end-1 {
				continue
			}
			seen++
			if seen == n {
				return pos + i + 1, nil
			}
		}
	}
	return 0, nil
}

// limitedWriter stops the response once limitBytes have been written.
type limitedWriter struct {
	w    io.Writer
	left int64
}

var errLimit = errors.New("limitBytes reached")

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errLimit
	}
	if int64(len(p)) > l.left {
		n, _ := l.w.Write(p[:l.left])
		l.left = 0
		return n, errLimit
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	return n, err
}

func optionalInt(r *http.Request, name string) (int64, bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false, errors.New(name + " must be a non-negative integer")
	}
	return n, true, nil
}

func (h *host) serveLogs(w http.ResponseWriter, r *http.Request) {
	p, ok := pathParts(r.URL.Path, 3)
	if !ok {
		http.Error(w, "want /containerLogs/<namespace>/<pod>/<container>", http.StatusBadRequest)
		return
	}
	tailLines, tail, err := optionalInt(r, "tailLines")
	limit, limited, limitErr := optionalInt(r, "limitBytes")
	if err = errors.Join(err, limitErr); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if limited {
		w = &limitedResponse{ResponseWriter: w, lw: &limitedWriter{w: w, left: limit}}
	}
	h.streamLog(w, r, p, tailLines, tail)
}

// limitedResponse is a ResponseWriter whose body is cut at limitBytes.
type limitedResponse struct {
	http.ResponseWriter
	lw *limitedWriter
}

func (l *limitedResponse) Write(p []byte) (int, error) { return l.lw.Write(p) }

func (l *limitedResponse) Flush() {
	if f, ok := l.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (h *host) streamLog(w http.ResponseWriter, r *http.Request, p []string, tailLines int64, tail bool) {
	path := filepath.Join(h.logRoot, p[0], p[1], p[2]+".log")
	follow := r.URL.Query().Get("follow") == "true"
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		f = nil
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if f != nil {
		defer f.Close()
		if tail {
			start, err := tailStart(f, tailLines)
			if tailLines == 0 {
				start, err = f.Seek(0, io.SeekEnd)
			}
			if err == nil {
				_, err = f.Seek(start, io.SeekStart)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	if f == nil && !follow {
		return
	}
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, tailBlock)
	for {
		if f != nil {
			for {
				n, err := f.Read(buf)
				if n > 0 {
					if _, werr := w.Write(buf[:n]); werr != nil {
						if flusher != nil {
							flusher.Flush()
						}
						return
					}
				}
				if err != nil {
					break
				}
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if !follow {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(logPollInterval):
		}
		if f == nil {
			// A log that appears later is followed from its start.
			if f, _ = os.Open(path); f != nil {
				defer f.Close()
			}
		}
	}
}
