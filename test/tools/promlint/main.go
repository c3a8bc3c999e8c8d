// promlint reads a Prometheus text exposition on stdin and exits non-zero when
// it does not parse strictly (expfmt, as Prometheus's scraper reads it) or
// when promlint — the checks `promtool check metrics` runs — finds a problem:
// missing help, counters without _total, non-base units, reserved suffixes,
// camelCase names and the like. Each problem is printed on stderr.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "read: %v\n", err)
		os.Exit(2)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		fmt.Fprintf(os.Stderr, "parse: %v\n", err)
		os.Exit(1)
	}
	for name, family := range families {
		if family.GetHelp() == "" {
			fmt.Fprintf(os.Stderr, "%s: no HELP\n", name)
			os.Exit(1)
		}
	}
	problems, err := promlint.New(bytes.NewReader(data)).Lint()
	if err != nil {
		fmt.Fprintf(os.Stderr, "lint: %v\n", err)
		os.Exit(1)
	}
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "%s: %s\n", p.Metric, p.Text)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("%d metric families, no problems\n", len(families))
}
