package signals

import (
	"encoding/json"
	"fmt"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
)

// Positional is several values sent as the positional arguments of one
// signal, the way PostHog's Python client sends them, through the
// DataConverter of this package (the SDK's test environment takes one value
// per signal).
type Positional []any

// DataConverter wraps inner (the SDK's default when nil) so that a signal
// received into *Args keeps every positional argument: the Go SDK hands a
// signal channel's Receive target to FromPayloads alone, which decodes the
// first payload only. Every client whose workers run process-task must use it.
func DataConverter(inner converter.DataConverter) converter.DataConverter {
	if inner == nil {
		inner = converter.GetDefaultDataConverter()
	}
	if _, ok := inner.(argsConverter); ok {
		return inner
	}
	return argsConverter{inner}
}

type argsConverter struct{ converter.DataConverter }

func (c argsConverter) ToPayloads(values ...any) (*commonpb.Payloads, error) {
	if len(values) == 1 {
		if p, ok := values[0].(Positional); ok {
			return c.DataConverter.ToPayloads(p...)
		}
	}
	return c.DataConverter.ToPayloads(values...)
}

func (c argsConverter) FromPayloads(payloads *commonpb.Payloads, valuePtrs ...any) error {
	if len(valuePtrs) == 1 {
		if args, ok := valuePtrs[0].(*Args); ok {
			return c.decodeAll(payloads, args)
		}
	}
	return c.DataConverter.FromPayloads(payloads, valuePtrs...)
}

func (c argsConverter) decodeAll(payloads *commonpb.Payloads, args *Args) error {
	values := make([]json.RawMessage, len(payloads.GetPayloads()))
	for i, p := range payloads.GetPayloads() {
		if err := c.DataConverter.FromPayload(p, &values[i]); err != nil {
			return fmt.Errorf("signal argument %d: %w", i+1, err)
		}
	}
	*args = Args{Values: values}
	return nil
}
