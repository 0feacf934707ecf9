// Package s3store is the blobstore driver for any S3 endpoint (AWS S3,
// SeaweedFS, MinIO …) through aws-sdk-go-v2: one bucket, keys as object keys.
// Put-if-absent is S3's conditional write (If-None-Match: *), which the server
// decides atomically; a server that ignores the header would silently replace,
// so the conformance suite's concurrent-put test runs against each server we
// support. A reader never sees a partial object: S3 makes an object visible
// only once its upload completed.
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/agentkeys/agentkeys/internal/blobstore"
)

// Config says where the bucket is and how to reach it.
type Config struct {
	Bucket      string
	Region      string                  // default us-east-1
	Endpoint    string                  // "" = AWS; else e.g. http://127.0.0.1:8333
	PathStyle   bool                    // http://host/bucket/key instead of http://bucket.host/key (most local servers)
	Credentials aws.CredentialsProvider // static, or minted from STS by the daemon
	HTTPClient  *http.Client            // nil = the SDK's client, keeping up to MaxIdleConns connections open
}

// MaxIdleConns is how many idle connections to the endpoint the default
// client keeps for reuse. The SDK's own default is 10 per host; the mail edge
// stores one message per SMTP connection in flight (up to 200), and each
// write past the tenth at once would open a TCP connection and close it
// after. (With 16 writers the difference is small: 18 connections opened for
// 2,000 puts with the SDK's default, 16 with this.)
const MaxIdleConns = 128

// Store is one S3 bucket.
type Store struct {
	c      *s3.Client
	bucket string
}

var _ blobstore.Store = (*Store)(nil)

// New returns the store of cfg's bucket; it does not contact the server.
func New(cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3store: name the bucket")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	o := s3.Options{Region: cfg.Region, UsePathStyle: cfg.PathStyle, Credentials: cfg.Credentials}
	if cfg.Endpoint != "" {
		o.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	if cfg.HTTPClient != nil {
		o.HTTPClient = cfg.HTTPClient
	} else {
		o.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConns, t.MaxIdleConnsPerHost = MaxIdleConns, MaxIdleConns
		})
	}
	return &Store{c: s3.New(o), bucket: cfg.Bucket}, nil
}

// errCode is the S3 error code of err, or "".
func errCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// PutIfAbsent implements blobstore.Store.
func (s *Store) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	if err := blobstore.CheckKey(key); err != nil {
		return err
	}
	_, err := s.c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), IfNoneMatch: aws.String("*")})
	switch errCode(err) {
	case "":
	case "PreconditionFailed", "ConditionalRequestConflict":
		return fmt.Errorf("%w: %s", blobstore.ErrExists, key)
	}
	if err != nil {
		return fmt.Errorf("s3store: storing %s: %w", key, err)
	}
	return nil
}

// Get implements blobstore.Store.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	if err := blobstore.CheckKey(key); err != nil {
		return nil, err
	}
	out, err := s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) || errCode(err) == "NotFound" {
		return nil, fmt.Errorf("%w: %s", blobstore.ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("s3store: reading %s: %w", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("s3store: reading %s: %w", key, err)
	}
	if out.ContentLength != nil && int64(len(b)) != *out.ContentLength {
		return nil, fmt.Errorf("s3store: reading %s: %d of %d bytes", key, len(b), *out.ContentLength)
	}
	return b, nil
}

// List implements blobstore.Store.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) ([]blobstore.Object, bool, error) {
	if err := blobstore.CheckPrefix(prefix); err != nil {
		return nil, false, err
	}
	limit, err := blobstore.CheckLimit(limit)
	if err != nil {
		return nil, false, err
	}
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), MaxKeys: aws.Int32(int32(limit))}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	if after != "" {
		in.StartAfter = aws.String(after)
	}
	out, err := s.c.ListObjectsV2(ctx, in)
	if err != nil {
		return nil, false, fmt.Errorf("s3store: listing %s: %w", prefix, err)
	}
	objs := make([]blobstore.Object, 0, len(out.Contents))
	for _, o := range out.Contents {
		objs = append(objs, blobstore.Object{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size)})
	}
	return objs, aws.ToBool(out.IsTruncated), nil
}

// Delete implements blobstore.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blobstore.CheckKey(key); err != nil {
		return err
	}
	_, err := s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil && errCode(err) != "NoSuchKey" {
		return fmt.Errorf("s3store: deleting %s: %w", key, err)
	}
	return nil
}
