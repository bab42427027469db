-- 12,000 generated UK pharmacies for the search benchmark (bench/search). NOT part of
-- `flask seed`: scripts/seed/*.sql run by default, this folder does not. Run it with
-- `python -m bench.search` (which loads it), through app.seeding.bulk_pharmacies_sql(),
-- or by hand: `psql -f scripts/seed/bulk/pharmacies.sql` (PostgreSQL), `sqlite3 FILE <
-- scripts/seed/bulk/pharmacies.sql` (SQLite). Portable SQL: a recursive CTE over small
-- VALUES tables, like 002_test_prescriptions.sql. Change the count in ONE place:
-- `params(total) AS (SELECT 12000)`.
--
-- Pharmacy n: town n % 61, street n % 41, surname n % 43 (prime list sizes, so no two
-- pharmacies share town, street, surname and name shape; Northern Ireland's towns are
-- Region A, by email; Great Britain's are Region B, on the platform),
-- names in ten shapes (1 in 10 a Boots branch), addresses "number street", postcodes in
-- the real formats (A9 9AA, A99 9AA, AA9 9AA, AA99 9AA, A9A 9AA, AA9A 9AA; inward letters
-- from Royal Mail's set). Region B branch ids are 100000 + n, unique; one Region B
-- pharmacy in 50 has none yet (not on the platform), and search must not list it.
-- Some names carry accents (Müller, Ó Briain, Llŷr, Zoë...), so accent-insensitive
-- search has something to find. Emails are bulkN@pharmacy-bulk.example.test.
-- Safe to run twice: nothing is inserted when any bulk pharmacy already exists.

INSERT INTO pharmacies (region_code, name, branch_id, group_name, email, address_line1, city, post_code)
WITH RECURSIVE
  params(total) AS (SELECT 12000),
  seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < (SELECT total FROM params)),
  towns(i, town, area, districts, region) AS (VALUES
    (0, 'London', 'W1U', 0, 'B'),
    (1, 'London', 'EC1A', 0, 'B'),
    (2, 'London', 'SW1A', 0, 'B'),
    (3, 'London', 'WC2N', 0, 'B'),
    (4, 'London', 'SE', 28, 'B'),
    (5, 'London', 'N', 22, 'B'),
    (6, 'London', 'E', 18, 'B'),
    (7, 'London', 'NW', 11, 'B'),
    (8, 'Leeds', 'LS', 29, 'B'),
    (9, 'Manchester', 'M', 40, 'B'),
    (10, 'Birmingham', 'B', 76, 'B'),
    (11, 'Bristol', 'BS', 41, 'B'),
    (12, 'Liverpool', 'L', 39, 'B'),
    (13, 'Sheffield', 'S', 36, 'B'),
    (14, 'Newcastle upon Tyne', 'NE', 20, 'B'),
    (15, 'Nottingham', 'NG', 25, 'B'),
    (16, 'Leicester', 'LE', 19, 'B'),
    (17, 'Cardiff', 'CF', 24, 'B'),
    (18, 'Swansea', 'SA', 9, 'B'),
    (19, 'Edinburgh', 'EH', 17, 'B'),
    (20, 'Glasgow', 'G', 34, 'B'),
    (21, 'Aberdeen', 'AB', 25, 'B'),
    (22, 'Dundee', 'DD', 5, 'B'),
    (23, 'Oxford', 'OX', 4, 'B'),
    (24, 'Cambridge', 'CB', 5, 'B'),
    (25, 'York', 'YO', 32, 'B'),
    (26, 'Bath', 'BA', 2, 'B'),
    (27, 'Exeter', 'EX', 4, 'B'),
    (28, 'Plymouth', 'PL', 9, 'B'),
    (29, 'Portsmouth', 'PO', 6, 'B'),
    (30, 'Brighton', 'BN', 3, 'B'),
    (31, 'Norwich', 'NR', 7, 'B'),
    (32, 'Hull', 'HU', 9, 'B'),
    (33, 'Bradford', 'BD', 15, 'B'),
    (34, 'Coventry', 'CV', 6, 'B'),
    (35, 'Stoke-on-Trent', 'ST', 4, 'B'),
    (36, 'Wolverhampton', 'WV', 14, 'B'),
    (37, 'Derby', 'DE', 24, 'B'),
    (38, 'Southampton', 'SO', 19, 'B'),
    (39, 'Reading', 'RG', 6, 'B'),
    (40, 'Milton Keynes', 'MK', 15, 'B'),
    (41, 'Preston', 'PR', 5, 'B'),
    (42, 'Middlesbrough', 'TS', 9, 'B'),
    (43, 'Harrogate', 'HG', 5, 'B'),
    (44, 'Cheltenham', 'GL', 53, 'B'),
    (45, 'Inverness', 'IV', 3, 'B'),
    (46, 'Stirling', 'FK', 9, 'B'),
    (47, 'Wrexham', 'LL', 14, 'B'),
    (48, 'Aberystwyth', 'SY', 23, 'B'),
    (49, 'Caernarfon', 'LL', 55, 'B'),
    (50, 'Llandudno', 'LL', 30, 'B'),
    (51, 'Merthyr Tudful', 'CF', 48, 'B'),
    (52, 'Belfast', 'BT', 17, 'A'),
    (53, 'Londonderry', 'BT', 48, 'A'),
    (54, 'Newry', 'BT', 35, 'A'),
    (55, 'Armagh', 'BT', 61, 'A'),
    (56, 'Ballymena', 'BT', 43, 'A'),
    (57, 'Omagh', 'BT', 79, 'A'),
    (58, 'Enniskillen', 'BT', 74, 'A'),
    (59, 'Lisburn', 'BT', 28, 'A'),
    (60, 'Lancaster', 'LA', 23, 'B')
  ),
  streets(i, street) AS (VALUES
    (0, 'High Street'),
    (1, 'Station Road'),
    (2, 'Church Street'),
    (3, 'Market Place'),
    (4, 'London Road'),
    (5, 'Victoria Road'),
    (6, 'Park Road'),
    (7, 'Queen Street'),
    (8, 'King Street'),
    (9, 'Mill Lane'),
    (10, 'The Parade'),
    (11, 'Broadway'),
    (12, 'Chapel Street'),
    (13, 'Bridge Street'),
    (14, 'North Road'),
    (15, 'Castle Street'),
    (16, 'Manor Road'),
    (17, 'Green Lane'),
    (18, 'Albert Road'),
    (19, 'Stryd Fawr'),
    (20, 'Heol y Bont'),
    (21, 'Main Street'),
    (22, 'Bank Street'),
    (23, 'Newgate'),
    (24, 'Westgate'),
    (25, 'Commercial Road'),
    (26, 'Sandy Lane'),
    (27, 'Mount Pleasant'),
    (28, 'Grove Road'),
    (29, 'Clarence Street'),
    (30, 'Rhodfa''r Môr'),
    (31, 'Crescent Road'),
    (32, 'Abbey Road'),
    (33, 'Fore Street'),
    (34, 'Bond Street'),
    (35, 'Cathedral Road'),
    (36, 'St Mary''s Road'),
    (37, 'Springfield Road'),
    (38, 'Hillside'),
    (39, 'Promenade'),
    (40, 'Ffordd y Brenin')
  ),
  surnames(i, surname) AS (VALUES
    (0, 'Patel'),
    (1, 'Shah'),
    (2, 'Hughes'),
    (3, 'Jones'),
    (4, 'Williams'),
    (5, 'Davies'),
    (6, 'Evans'),
    (7, 'Thomas'),
    (8, 'Roberts'),
    (9, 'Khan'),
    (10, 'Singh'),
    (11, 'Ahmed'),
    (12, 'Campbell'),
    (13, 'Stewart'),
    (14, 'Murray'),
    (15, 'O''Neill'),
    (16, 'McLaughlin'),
    (17, 'Kelly'),
    (18, 'Walsh'),
    (19, 'Byrne'),
    (20, 'Müller'),
    (21, 'Núñez'),
    (22, 'Dubé'),
    (23, 'Ó Briain'),
    (24, 'Ní Mhurchú'),
    (25, 'Gruffydd'),
    (26, 'Siân'),
    (27, 'Llŷr'),
    (28, 'Bérénice'),
    (29, 'Zoë'),
    (30, 'Renée'),
    (31, 'François'),
    (32, 'Ångström'),
    (33, 'Søren'),
    (34, 'Brontë'),
    (35, 'Chloé'),
    (36, 'Gaël'),
    (37, 'Hélène'),
    (38, 'Noël'),
    (39, 'Clarke'),
    (40, 'Ó Súilleabháin'),
    (41, 'Björnsson'),
    (42, 'Mahmood')
  ),
  picked(n, town, area, districts, region, street, surname, partner) AS (
    SELECT seq.n, t.town, t.area, t.districts, t.region, st.street, sn.surname, sp.surname
    FROM seq
    JOIN towns t ON t.i = seq.n % 61
    JOIN streets st ON st.i = seq.n % 41
    JOIN surnames sn ON sn.i = seq.n % 43
    JOIN surnames sp ON sp.i = (seq.n * 7 + 5) % 43
  )
SELECT
  region,
  CASE n % 10
    WHEN 0 THEN 'Boots ' || town || ' ' || street
    WHEN 1 THEN street || ' Pharmacy'
    WHEN 2 THEN town || ' Pharmacy'
    WHEN 3 THEN surname || ' Chemists'
    WHEN 4 THEN surname || '''s Pharmacy'
    WHEN 5 THEN surname || ' & ' || partner || ' Pharmacy'
    WHEN 6 THEN 'The ' || street || ' Pharmacy'
    WHEN 7 THEN surname || ' Healthcare'
    WHEN 8 THEN town || ' Community Pharmacy'
    ELSE surname || ' Pharmacy ' || town
  END,
  CASE WHEN region = 'B' AND n % 50 <> 25 THEN 100000 + n END,
  CASE WHEN n % 10 = 0 THEN 'Boots' WHEN region = 'A' THEN NULL ELSE 'All Other Pharmacies' END,
  'bulk' || CAST(n AS VARCHAR(8)) || '@pharmacy-bulk.example.test',
  CAST(1 + (n * 37) % 239 AS VARCHAR(4)) || ' ' || street,
  town,
  CASE WHEN districts = 0 THEN area ELSE area || CAST(1 + (n * 11) % districts AS VARCHAR(3)) END
    || ' ' || CAST((n * 3) % 10 AS VARCHAR(1))
    || substr('ABDEFGHJLNPQRSTUWXYZ', 1 + (n * 7) % 20, 1)
    || substr('ABDEFGHJLNPQRSTUWXYZ', 1 + (n * 13) % 20, 1)
FROM picked
WHERE NOT EXISTS (SELECT 1 FROM pharmacies WHERE email = 'bulk1@pharmacy-bulk.example.test');
