package archive

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/blobstore/s3store"
)

// S3 says how to reach an s3:// archive; zero values are AWS's defaults.
// Credentials come from the AWS SDK's default chain (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role …), never from argv.
type S3 struct {
	Endpoint  string // e.g. http://127.0.0.1:8333 for a local server; "" = AWS
	PathStyle bool   // http://host/bucket/key (most local servers)
	Region    string // default us-east-1
}

// Open returns the archive at where: a local directory (its segment files
// 0600), or s3://BUCKET[/PREFIX]. A directory is created (0700) only when
// create is set (export); reading one that is not there is an error.
func Open(ctx context.Context, where string, s3 S3, create bool) (*Archive, error) {
	rest, isS3 := strings.CutPrefix(where, "s3://")
	if !isS3 {
		if where == "" || strings.Contains(where, "://") {
			return nil, fmt.Errorf("an archive is a directory or s3://BUCKET/PREFIX, not %q", where)
		}
		if fi, err := os.Stat(where); !create && (err != nil || !fi.IsDir()) {
			return nil, fmt.Errorf("no archive directory at %s", where)
		}
		st, err := localstore.Open(where)
		if err != nil {
			return nil, err
		}
		return New(st, "", where)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return nil, fmt.Errorf("%q names no bucket: use s3://BUCKET/PREFIX", where)
	}
	region := s3.Region
	if region == "" {
		region = "us-east-1"
	}
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region))
	if err != nil {
		return nil, fmt.Errorf("loading AWS credentials for %s: %w", where, err)
	}
	st, err := s3store.New(s3store.Config{Bucket: bucket, Region: region, Endpoint: s3.Endpoint, PathStyle: s3.PathStyle, Credentials: cfg.Credentials})
	if err != nil {
		return nil, err
	}
	return New(st, prefix, where)
}
