package dynamodb

import "github.com/aws/aws-sdk-go-v2/service/dynamodb"

// Client and Table let the package's tests inspect the items behind a store.
func Client(s *Store) *dynamodb.Client { return s.client }
func Table(s *Store) string            { return s.table }
