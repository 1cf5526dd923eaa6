-- Schema and seed data of the `inventory` table of database `bostonautosales`,
-- used by the psql_inventory and psql_purchase functions.
--
-- Running this script (re)creates the table and refills it with the 60 cars
-- below: it is how an operator resets stock after a benchmark. The database
-- itself must exist; functions.SeedPostgres creates it if it does not.
--
-- The original MicroFaaS database was never published; these rows are our
-- own: 60 cars with ids 1..60 (the range psql_purchase's inputs use), and
-- the columns the original queries read (car_make, car_model,
-- car_model_year, number_in_stock, id).
--
-- Load it by hand with:
--   psql "postgres://USER:PASSWORD@HOST:5432/bostonautosales" -v ON_ERROR_STOP=1 -f bostonautosales.sql

BEGIN;

DROP TABLE IF EXISTS inventory;

CREATE TABLE inventory (
    id              integer PRIMARY KEY,
    car_make        text    NOT NULL,
    car_model       text    NOT NULL,
    car_model_year  integer NOT NULL,
    number_in_stock integer NOT NULL CHECK (number_in_stock >= 0)
);

INSERT INTO inventory (id, car_make, car_model, car_model_year, number_in_stock) VALUES
    ( 1, 'Toyota',        'Camry',       2019, 12),
    ( 2, 'Toyota',        'Corolla',     2020, 18),
    ( 3, 'Toyota',        'RAV4',        2021, 15),
    ( 4, 'Toyota',        'Highlander',  2018,  7),
    ( 5, 'Toyota',        'Prius',       2017,  9),
    ( 6, 'Honda',         'Civic',       2020, 20),
    ( 7, 'Honda',         'Accord',      2019, 14),
    ( 8, 'Honda',         'CR-V',        2021, 16),
    ( 9, 'Honda',         'Pilot',       2018,  6),
    (10, 'Honda',         'Fit',         2016,  8),
    (11, 'Ford',          'F-150',       2020, 22),
    (12, 'Ford',          'Escape',      2019, 11),
    (13, 'Ford',          'Explorer',    2018,  9),
    (14, 'Ford',          'Mustang',     2017,  5),
    (15, 'Ford',          'Focus',       2016, 10),
    (16, 'Chevrolet',     'Silverado',   2020, 17),
    (17, 'Chevrolet',     'Equinox',     2019, 13),
    (18, 'Chevrolet',     'Malibu',      2018, 10),
    (19, 'Chevrolet',     'Tahoe',       2021,  6),
    (20, 'Chevrolet',     'Bolt EV',     2022,  8),
    (21, 'Nissan',        'Altima',      2019, 12),
    (22, 'Nissan',        'Rogue',       2020, 15),
    (23, 'Nissan',        'Sentra',      2018, 11),
    (24, 'Nissan',        'Leaf',        2021,  7),
    (25, 'Subaru',        'Outback',     2020, 14),
    (26, 'Subaru',        'Forester',    2019, 13),
    (27, 'Subaru',        'Impreza',     2018,  9),
    (28, 'Subaru',        'Crosstrek',   2021, 12),
    (29, 'Hyundai',       'Elantra',     2020, 16),
    (30, 'Hyundai',       'Sonata',      2019, 10),
    (31, 'Hyundai',       'Tucson',      2021, 11),
    (32, 'Hyundai',       'Santa Fe',    2018,  6),
    (33, 'Kia',           'Soul',        2019,  9),
    (34, 'Kia',           'Sorento',     2020,  8),
    (35, 'Kia',           'Forte',       2021, 13),
    (36, 'Volkswagen',    'Jetta',       2019, 10),
    (37, 'Volkswagen',    'Golf',        2017,  7),
    (38, 'Volkswagen',    'Tiguan',      2020,  9),
    (39, 'Mazda',         'Mazda3',      2019, 11),
    (40, 'Mazda',         'CX-5',        2021, 14),
    (41, 'Mazda',         'MX-5 Miata',  2018,  4),
    (42, 'Jeep',          'Wrangler',    2020, 10),
    (43, 'Jeep',          'Grand Cherokee', 2019, 8),
    (44, 'Jeep',          'Cherokee',    2018,  7),
    (45, 'Ram',           '1500',        2021, 12),
    (46, 'GMC',           'Sierra',      2020,  9),
    (47, 'GMC',           'Acadia',      2019,  6),
    (48, 'Dodge',         'Charger',     2018,  5),
    (49, 'Dodge',         'Grand Caravan', 2017, 6),
    (50, 'Tesla',         'Model 3',     2021,  8),
    (51, 'Tesla',         'Model Y',     2022,  7),
    (52, 'BMW',           '3 Series',    2019,  6),
    (53, 'BMW',           'X3',          2020,  5),
    (54, 'Mercedes-Benz', 'C-Class',     2019,  5),
    (55, 'Mercedes-Benz', 'GLC',         2021,  4),
    (56, 'Audi',          'A4',          2018,  6),
    (57, 'Audi',          'Q5',          2020,  5),
    (58, 'Lexus',         'RX 350',      2019,  4),
    (59, 'Volvo',         'XC90',        2020,  3),
    (60, 'Acura',         'MDX',         2018,  4);

COMMIT;
