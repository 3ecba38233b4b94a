package worker

import (
	"fmt"

	"go.temporal.io/sdk/log"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger builds the daemon's logger: JSON for production, console for people.
func NewLogger(format, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("TASKWORKER_LOG_LEVEL %q: %w", level, err)
	}
	var cfg zap.Config
	if format == "console" {
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	} else {
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.TimeKey = "time"
		cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	return cfg.Build()
}

// temporalLogger hands the Temporal SDK's logs to zap.
type temporalLogger struct{ s *zap.SugaredLogger }

// NewTemporalLogger adapts a zap logger to the Temporal SDK.
func NewTemporalLogger(l *zap.Logger) log.Logger {
	return temporalLogger{s: l.WithOptions(zap.AddCallerSkip(1)).Sugar()}
}

func (l temporalLogger) Debug(msg string, kv ...any) { l.s.Debugw(msg, kv...) }
func (l temporalLogger) Info(msg string, kv ...any)  { l.s.Infow(msg, kv...) }
func (l temporalLogger) Warn(msg string, kv ...any)  { l.s.Warnw(msg, kv...) }
func (l temporalLogger) Error(msg string, kv ...any) { l.s.Errorw(msg, kv...) }
