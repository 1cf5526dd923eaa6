//go:build !mf_no_postgres

package functions

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func init() {
	Register("psql_inventory", psqlInventory)
	Register("psql_purchase", psqlPurchase)
}

// BostonAutoSalesSQL is the schema and seed data of the inventory table
// (sql/bostonautosales.sql). Running it drops, recreates and refills the
// table.
//
//go:embed sql/bostonautosales.sql
var BostonAutoSalesSQL string

// DefaultPostgresDB is the database the psql_* functions use when the
// service settings name none, as in the original system.
const DefaultPostgresDB = "bostonautosales"

// maxInventoryRows bounds how many rows psql_inventory returns.
const maxInventoryRows = 10_000

// Car is one row of the inventory table.
type Car struct {
	ID      int64  `json:"id"`
	Make    string `json:"make"`
	Model   string `json:"model"`
	Year    int64  `json:"year"`
	InStock int64  `json:"in_stock"`
}

func (c Car) String() string {
	return fmt.Sprintf("%s %s %d", c.Make, c.Model, c.Year)
}

// psqlInventory lists every car in the inventory, ordered by id, with a
// summary line per car and the total in stock.
func psqlInventory(ctx context.Context, env Env, raw json.RawMessage) (any, error) {
	const fn = "psql_inventory"
	if _, err := parseArgs(fn, raw); err != nil {
		return nil, err
	}
	conn, err := connectPostgres(ctx, fn, env)
	if err != nil {
		return nil, err
	}
	defer closePostgres(conn)
	res := conn.ExecParams(ctx,
		"SELECT id, car_make, car_model, car_model_year, number_in_stock FROM inventory ORDER BY id LIMIT "+strconv.Itoa(maxInventoryRows+1),
		nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, opError(ctx, fn, "postgres", "select from inventory", res.Err)
	}
	if len(res.Rows) > maxInventoryRows {
		return nil, fmt.Errorf("%s: inventory has more than the %d rows this function returns", fn, maxInventoryRows)
	}
	cars := make([]Car, 0, len(res.Rows))
	for _, row := range res.Rows {
		car, err := scanCar(row)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		cars = append(cars, car)
	}
	summary, total := inventorySummary(cars)
	return map[string]any{"summary": summary, "total_in_stock": total, "cars": cars}, nil
}

// inventorySummary renders the original function's text: "1) Toyota Camry
// 2019: 12 in stock    2) ...    Total cars in stock: N".
func inventorySummary(cars []Car) (string, int64) {
	var b strings.Builder
	var total int64
	for _, c := range cars {
		fmt.Fprintf(&b, "%d) %s: %d in stock    ", c.ID, c, c.InStock)
		total += c.InStock
	}
	fmt.Fprintf(&b, "Total cars in stock: %d", total)
	return b.String(), total
}

// scanCar decodes a text-format row: id, make, model, year, in stock.
func scanCar(row [][]byte) (Car, error) {
	if len(row) != 5 {
		return Car{}, fmt.Errorf("inventory row has %d columns, want 5", len(row))
	}
	var c Car
	var err error
	for i, dst := range []*int64{&c.ID, &c.Year, &c.InStock} {
		col := []int{0, 3, 4}[i]
		if row[col] == nil {
			return Car{}, fmt.Errorf("inventory row has NULL in column %d", col)
		}
		if *dst, err = strconv.ParseInt(string(row[col]), 10, 64); err != nil {
			return Car{}, fmt.Errorf("inventory column %d: %q is not an integer", col, row[col])
		}
	}
	c.Make, c.Model = string(row[1]), string(row[2])
	return c, nil
}

// psqlPurchase takes one car with the given id out of stock.
func psqlPurchase(ctx context.Context, env Env, raw json.RawMessage) (any, error) {
	const fn = "psql_purchase"
	a, err := parseArgs(fn, raw)
	if err != nil {
		return nil, err
	}
	id, err := a.int("id", 1, 1<<31-1)
	if err != nil {
		return nil, err
	}
	conn, err := connectPostgres(ctx, fn, env)
	if err != nil {
		return nil, err
	}
	defer closePostgres(conn)
	idText := []byte(strconv.FormatInt(id, 10))
	// One statement: the check and the decrement cannot race with another
	// purchase of the same car.
	res := conn.ExecParams(ctx,
		`UPDATE inventory SET number_in_stock = number_in_stock - 1
		 WHERE id = $1 AND number_in_stock > 0
		 RETURNING id, car_make, car_model, car_model_year, number_in_stock`,
		[][]byte{idText}, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, opError(ctx, fn, "postgres", "update inventory", res.Err)
	}
	if len(res.Rows) == 1 {
		car, err := scanCar(res.Rows[0])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fn, err)
		}
		return map[string]any{"success": true, "car": car}, nil
	}
	// Nothing updated: say whether the car is unknown or sold out.
	res = conn.ExecParams(ctx,
		"SELECT id, car_make, car_model, car_model_year, number_in_stock FROM inventory WHERE id = $1",
		[][]byte{idText}, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, opError(ctx, fn, "postgres", "select from inventory", res.Err)
	}
	if len(res.Rows) == 0 {
		return nil, fmt.Errorf("%s: no car with id %d in the inventory", fn, id)
	}
	car, err := scanCar(res.Rows[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	return nil, fmt.Errorf("%s: car %d (%s) is out of stock", fn, id, car)
}

// PostgresDSN builds a connection string from the "postgres" service's
// settings: either dsn (a URL or key=value string, used as is), or host
// (required), port (5432), user (postgres), password, dbname
// (bostonautosales) and sslmode (prefer).
func PostgresDSN(s map[string]string) (string, error) {
	if dsn := s["dsn"]; dsn != "" {
		return dsn, nil
	}
	host := s["host"]
	if host == "" {
		return "", errors.New(`service "postgres" needs a dsn or a host setting: add it under services: postgres: in the cluster file`)
	}
	kv := [][2]string{
		{"host", host},
		{"port", valueOr(s["port"], "5432")},
		{"user", valueOr(s["user"], "postgres")},
		{"dbname", valueOr(s["dbname"], DefaultPostgresDB)},
		{"sslmode", valueOr(s["sslmode"], "prefer")},
	}
	if pw := s["password"]; pw != "" {
		kv = append(kv, [2]string{"password", pw})
	}
	parts := make([]string, len(kv))
	for i, p := range kv {
		parts[i] = p[0] + "=" + quoteConnValue(p[1])
	}
	return strings.Join(parts, " "), nil
}

// quoteConnValue quotes a value for a libpq key=value connection string.
func quoteConnValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `\'`)
	return "'" + v + "'"
}

// connectPostgres opens one connection for one job.
func connectPostgres(ctx context.Context, fn string, env Env) (*pgconn.PgConn, error) {
	s, err := env.Service("postgres")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	dsn, err := PostgresDSN(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	timeout, err := settingDuration(fn, "postgres", s, "dial_timeout", defaultDialTimeout)
	if err != nil {
		return nil, err
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		// pgconn redacts the password in its parse errors.
		return nil, fmt.Errorf("%s: service \"postgres\": bad connection settings: %w", fn, err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = timeout
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(ctx, fn, "postgres", pgAddr(cfg), err)
	}
	return conn, nil
}

func pgAddr(cfg *pgconn.Config) string {
	if strings.HasPrefix(cfg.Host, "/") {
		return cfg.Host
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// SeedPostgres creates the inventory table in the database the DSN names
// (bostonautosales if it names none) and fills it with the 60 cars of
// sql/bostonautosales.sql, replacing whatever the table held. If the
// database does not exist it is created first, through the server's
// "postgres" database, which needs the CREATEDB privilege.
func SeedPostgres(ctx context.Context, dsn string) error {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("seed postgres: bad DSN: %w", err)
	}
	if cfg.Database == "" {
		cfg.Database = DefaultPostgresDB
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultDialTimeout
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "3D000" { // invalid_catalog_name
		if err := createDatabase(ctx, cfg); err != nil {
			return err
		}
		conn, err = pgconn.ConnectConfig(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("seed postgres: connecting to database %q at %s: %w", cfg.Database, pgAddr(cfg), err)
	}
	defer closePostgres(conn)
	if _, err := conn.Exec(ctx, BostonAutoSalesSQL).ReadAll(); err != nil {
		return fmt.Errorf("seed postgres: loading sql/bostonautosales.sql into %q: %w", cfg.Database, err)
	}
	return nil
}

func createDatabase(ctx context.Context, cfg *pgconn.Config) error {
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgconn.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("seed postgres: database %q does not exist, and connecting to database \"postgres\" to create it failed: %w", cfg.Database, err)
	}
	defer closePostgres(conn)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+quoteIdent(cfg.Database)).ReadAll(); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: created meanwhile
			return nil
		}
		return fmt.Errorf("seed postgres: creating database %q: %w", cfg.Database, err)
	}
	return nil
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// closePostgres ends a session politely, waiting at most a second for a
// server that has stopped answering.
func closePostgres(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn.Close(ctx)
}
