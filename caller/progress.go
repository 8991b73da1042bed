package caller

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Progress redraws one line on a terminal while a Run works: a bar when the input's size
// is known, the rows answered and the rate. It stays silent until a second batch starts,
// so short calls print nothing. Use it only when w is a terminal.
type Progress struct {
	w          io.Writer
	batchRows  int64
	totalBytes int64
	start      time.Time
	read       atomic.Int64 // input bytes
	rowsRead   atomic.Int64
	rowsDone   atomic.Int64
	stop       chan struct{}
	stopped    sync.WaitGroup
	drawn      bool
}

// NewProgress returns a progress line for w, for batches of batchRows rows and an input
// of totalBytes bytes (0 if unknown).
func NewProgress(w io.Writer, batchRows int, totalBytes int64) *Progress {
	return &Progress{w: w, batchRows: int64(batchRows), totalBytes: totalBytes}
}

// Input counts the bytes read from r for the bar.
func (p *Progress) Input(r io.Reader) io.Reader { return &countingReader{r: r, n: &p.read} }

// Rows counts the rows read from in.
func (p *Progress) Rows(in RowReader) RowReader { return &countingRows{RowReader: in, n: &p.rowsRead} }

// Done counts an outcome's rows as answered; call it from Run's sink.
func (p *Progress) Done(o Outcome) { p.rowsDone.Add(int64(len(o.Rows))) }

// Start redraws the line four times a second until Stop.
func (p *Progress) Start() {
	p.start = time.Now()
	p.stop = make(chan struct{})
	p.stopped.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
				p.draw()
			}
		}
	})
}

// Stop ends the redrawing and erases the line.
func (p *Progress) Stop() {
	close(p.stop)
	p.stopped.Wait()
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func (p *Progress) draw() {
	if p.rowsRead.Load() <= p.batchRows {
		return
	}
	p.drawn = true
	done := p.rowsDone.Load()
	rate := float64(done) / time.Since(p.start).Seconds()
	line := fmt.Sprintf("%d rows (%.0f rows/s)", done, rate)
	if p.totalBytes > 0 {
		const width = 30
		frac := min(float64(p.read.Load())/float64(p.totalBytes), 1)
		filled := int(frac * width)
		line = fmt.Sprintf("[%s%s] %3.0f%% read  %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), 100*frac, line)
	}
	fmt.Fprint(p.w, "\r\033[K"+line)
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

type countingRows struct {
	RowReader
	n *atomic.Int64
}

func (c *countingRows) Read() (Row, error) {
	row, err := c.RowReader.Read()
	if err == nil {
		c.n.Add(1)
	}
	return row, err
}
