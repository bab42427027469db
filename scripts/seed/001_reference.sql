-- Reference data for erx-connector. Portable: runs with `psql -f` on PostgreSQL and
-- through `flask --app app seed` on PostgreSQL or SQLite. Safe to run twice: every
-- insert is `ON CONFLICT DO NOTHING` on a natural unique key.
--
-- The clinic, prescribers, pharmacy branch ids and medicines match the platform
-- sandbox's directory (sandbox/directory.py). Patients are fictional; phone numbers
-- use Ofcom's drama range (07700 900xxx). dm+d ids are illustrative VMP ids.

-- Regions: A keeps the existing email flow, B sends through the e-prescription platform.
INSERT INTO regions (code, name, flow) VALUES
  ('A', 'Region A (email to pharmacy)', 'email'),
  ('B', 'Region B (e-prescription platform)', 'erx')
ON CONFLICT DO NOTHING;

-- The dashboard shows 201334; the API wants 994 (contract section 3).
INSERT INTO clinics (display_id, platform_id, name) VALUES
  ('201334', 994, 'Harley Street Weight Clinic')
ON CONFLICT DO NOTHING;

-- Credentials are not here: SQL can't encrypt. `flask --app app prescribers set-credentials`.
INSERT INTO prescribers (platform_prescriber_id, name, email, clinic_id) VALUES
  (5531, 'Dr Rhiannon Jones', 'dr.jones@example.test', (SELECT id FROM clinics WHERE display_id = '201334')),
  (5532, 'Dr Anil Patel', 'dr.patel@example.test', (SELECT id FROM clinics WHERE display_id = '201334'))
ON CONFLICT DO NOTHING;

-- Region B pharmacies: platform contacts, keyed by branch id (contract section 3).
INSERT INTO pharmacies (region_code, name, branch_id, group_name, email, address_line1, city, post_code) VALUES
  ('B', 'Marylebone Pharmacy', 17, 'All Other Pharmacies', 'branch17@pharmacy.example.test', '48 Marylebone High Street', 'London', 'W1U 5HS'),
  ('B', 'Clifton Village Pharmacy', 101, 'All Other Pharmacies', 'branch101@pharmacy.example.test', '7 Princess Victoria Street', 'Bristol', 'BS8 4BX'),
  ('B', 'Jesmond Pharmacy', 102, 'All Other Pharmacies', 'branch102@pharmacy.example.test', '81 St George''s Terrace', 'Newcastle upon Tyne', 'NE2 2SY'),
  ('B', 'Headingley Pharmacy', 103, 'All Other Pharmacies', 'branch103@pharmacy.example.test', '22 Otley Road', 'Leeds', 'LS6 2AL'),
  ('B', 'Kings Heath Chemist', 104, 'All Other Pharmacies', 'branch104@pharmacy.example.test', '140 High Street', 'Birmingham', 'B14 7LG'),
  ('B', 'Roath Pharmacy', 105, 'All Other Pharmacies', 'branch105@pharmacy.example.test', '96 Albany Road', 'Cardiff', 'CF24 3RX'),
  ('B', 'Morningside Pharmacy', 106, 'All Other Pharmacies', 'branch106@pharmacy.example.test', '211 Morningside Road', 'Edinburgh', 'EH10 4QP'),
  ('B', 'Byres Road Pharmacy', 107, 'All Other Pharmacies', 'branch107@pharmacy.example.test', '320 Byres Road', 'Glasgow', 'G12 8AN'),
  ('B', 'Ecclesall Road Pharmacy', 108, 'All Other Pharmacies', 'branch108@pharmacy.example.test', '410 Ecclesall Road', 'Sheffield', 'S11 8PX'),
  ('B', 'Lark Lane Pharmacy', 109, 'All Other Pharmacies', 'branch109@pharmacy.example.test', '35 Lark Lane', 'Liverpool', 'L17 8US'),
  ('B', 'West Bridgford Pharmacy', 110, 'All Other Pharmacies', 'branch110@pharmacy.example.test', '54 Central Avenue', 'Nottingham', 'NG2 5GR'),
  ('B', 'Jericho Pharmacy', 111, 'All Other Pharmacies', 'branch111@pharmacy.example.test', '68 Walton Street', 'Oxford', 'OX2 6AG'),
  ('B', 'Mill Road Pharmacy', 112, 'All Other Pharmacies', 'branch112@pharmacy.example.test', '175 Mill Road', 'Cambridge', 'CB1 3AN'),
  ('B', 'Heavitree Pharmacy', 113, 'All Other Pharmacies', 'branch113@pharmacy.example.test', '19 Fore Street', 'Exeter', 'EX1 2QJ'),
  ('B', 'Southsea Pharmacy', 114, 'All Other Pharmacies', 'branch114@pharmacy.example.test', '88 Albert Road', 'Portsmouth', 'PO5 2SN'),
  ('B', 'Hove Pharmacy', 115, 'All Other Pharmacies', 'branch115@pharmacy.example.test', '42 George Street', 'Hove', 'BN3 3YB'),
  ('B', 'Clarendon Park Pharmacy', 116, 'All Other Pharmacies', 'branch116@pharmacy.example.test', '61 Queens Road', 'Leicester', 'LE2 1TT'),
  ('B', 'Bishopthorpe Road Pharmacy', 117, 'All Other Pharmacies', 'branch117@pharmacy.example.test', '43 Bishopthorpe Road', 'York', 'YO23 1NA'),
  ('B', 'Widcombe Pharmacy', 118, 'All Other Pharmacies', 'branch118@pharmacy.example.test', '6 Widcombe Parade', 'Bath', 'BA2 4JT'),
  ('B', 'Uplands Pharmacy', 119, 'All Other Pharmacies', 'branch119@pharmacy.example.test', '12 Uplands Crescent', 'Swansea', 'SA2 0PB'),
  ('B', 'Lisburn Road Pharmacy', 120, 'All Other Pharmacies', 'branch120@pharmacy.example.test', '140 Lisburn Road', 'Belfast', 'BT9 6AJ'),
  ('B', 'Rosemount Pharmacy', 121, 'All Other Pharmacies', 'branch121@pharmacy.example.test', '55 Rosemount Place', 'Aberdeen', 'AB25 2XD'),
  ('B', 'Broughty Ferry Pharmacy', 122, 'All Other Pharmacies', 'branch122@pharmacy.example.test', '190 Brook Street', 'Dundee', 'DD5 1DQ'),
  ('B', 'Cold Bath Road Pharmacy', 123, 'All Other Pharmacies', 'branch123@pharmacy.example.test', '27 Cold Bath Road', 'Harrogate', 'HG2 0NA'),
  ('B', 'Beverley Road Pharmacy', 124, 'All Other Pharmacies', 'branch124@pharmacy.example.test', '301 Beverley Road', 'Hull', 'HU5 1LQ'),
  ('B', 'Unthank Road Pharmacy', 125, 'All Other Pharmacies', 'branch125@pharmacy.example.test', '103 Unthank Road', 'Norwich', 'NR2 2PE'),
  ('B', 'Mutley Plain Pharmacy', 126, 'All Other Pharmacies', 'branch126@pharmacy.example.test', '58 Mutley Plain', 'Plymouth', 'PL4 6LF'),
  ('B', 'Chorlton Pharmacy', 127, 'All Other Pharmacies', 'branch127@pharmacy.example.test', '480 Barlow Moor Road', 'Manchester', 'M21 0BQ'),
  ('B', 'Wincheap Pharmacy', 128, 'All Other Pharmacies', 'branch128@pharmacy.example.test', '33 Wincheap', 'Canterbury', 'CT1 3TB'),
  ('B', 'Hartshill Pharmacy', 129, 'All Other Pharmacies', 'branch129@pharmacy.example.test', '150 Hartshill Road', 'Stoke-on-Trent', 'ST4 7NW'),
  ('B', 'Boots Manchester Market Street', 130, 'Boots', 'branch130@pharmacy.example.test', '32 Market Street', 'Manchester', 'M1 1PL'),
  ('B', 'Boots Birmingham New Street', 131, 'Boots', 'branch131@pharmacy.example.test', '67 New Street', 'Birmingham', 'B2 4DU'),
  ('B', 'Boots Leeds Briggate', 132, 'Boots', 'branch132@pharmacy.example.test', '40 Briggate', 'Leeds', 'LS1 6HD'),
  ('B', 'Boots Glasgow Argyle Street', 133, 'Boots', 'branch133@pharmacy.example.test', '200 Argyle Street', 'Glasgow', 'G2 8BU'),
  ('B', 'Boots Cardiff Queen Street', 134, 'Boots', 'branch134@pharmacy.example.test', '36 Queen Street', 'Cardiff', 'CF10 2RG'),
  ('B', 'Boots Bristol Broadmead', 135, 'Boots', 'branch135@pharmacy.example.test', '59 Broadmead', 'Bristol', 'BS1 3EA'),
  ('B', 'Boots London Regent Street', 136, 'Boots', 'branch136@pharmacy.example.test', '44 Regent Street', 'London', 'W1B 5RA'),
  ('B', 'Boots Edinburgh Princes Street', 137, 'Boots', 'branch137@pharmacy.example.test', '101 Princes Street', 'Edinburgh', 'EH2 3AA'),
  ('B', 'Lord Street Pharmacy', 138, 'All Other Pharmacies', 'branch138@pharmacy.example.test', '412 Lord Street', 'Southport', 'PR9 0AG'),
  ('B', 'Penny Street Pharmacy', 139, 'All Other Pharmacies', 'branch139@pharmacy.example.test', '29 Penny Street', 'Lancaster', 'LA1 1XF')
ON CONFLICT DO NOTHING;

-- Region A pharmacies: no platform branch id; prescriptions reach them by email.
-- They have no branch id to conflict on, so each insert is guarded by its email.
INSERT INTO pharmacies (region_code, name, branch_id, group_name, email, address_line1, city, post_code)
  SELECT 'A', 'Ards Pharmacy', NULL, NULL, 'ards@pharmacy-a.example.test', '14 Frances Street', 'Newtownards', 'BT23 7DN'
  WHERE NOT EXISTS (SELECT 1 FROM pharmacies WHERE email = 'ards@pharmacy-a.example.test');
INSERT INTO pharmacies (region_code, name, branch_id, group_name, email, address_line1, city, post_code)
  SELECT 'A', 'Lisburn Road Pharmacy', NULL, NULL, 'lisburnroad@pharmacy-a.example.test', '403 Lisburn Road', 'Belfast', 'BT9 7EW'
  WHERE NOT EXISTS (SELECT 1 FROM pharmacies WHERE email = 'lisburnroad@pharmacy-a.example.test');
INSERT INTO pharmacies (region_code, name, branch_id, group_name, email, address_line1, city, post_code)
  SELECT 'A', 'Ballymena Chemist', NULL, NULL, 'ballymena@pharmacy-a.example.test', '36 Church Street', 'Ballymena', 'BT43 6DF'
  WHERE NOT EXISTS (SELECT 1 FROM pharmacies WHERE email = 'ballymena@pharmacy-a.example.test');
INSERT INTO pharmacies (region_code, name, branch_id, group_name, email, address_line1, city, post_code)
  SELECT 'A', 'Foyle Pharmacy', NULL, NULL, 'foyle@pharmacy-a.example.test', '5 Strand Road', 'Londonderry', 'BT48 7AB'
  WHERE NOT EXISTS (SELECT 1 FROM pharmacies WHERE email = 'foyle@pharmacy-a.example.test');
INSERT INTO pharmacies (region_code, name, branch_id, group_name, email, address_line1, city, post_code)
  SELECT 'A', 'Armagh Pharmacy', NULL, NULL, 'armagh@pharmacy-a.example.test', '22 Market Street', 'Armagh', 'BT61 7BX'
  WHERE NOT EXISTS (SELECT 1 FROM pharmacies WHERE email = 'armagh@pharmacy-a.example.test');
INSERT INTO pharmacies (region_code, name, branch_id, group_name, email, address_line1, city, post_code)
  SELECT 'A', 'Enniskillen Pharmacy', NULL, NULL, 'enniskillen@pharmacy-a.example.test', '9 Darling Street', 'Enniskillen', 'BT74 7DP'
  WHERE NOT EXISTS (SELECT 1 FROM pharmacies WHERE email = 'enniskillen@pharmacy-a.example.test');

-- dm+d VMP catalogue. seq_no 1-16 are not controlled and feed the bulk generator;
-- 17-20 are scheduled drugs (2 and 3 cannot be issued electronically: contract section 2).
INSERT INTO medicines (vpid, seq_no, description, form, strength, controlled_schedule, default_qty, default_directions) VALUES
  ('39929811000001101', 1, 'Semaglutide 250micrograms/0.19ml solution for injection 1.5ml pre-filled disposable devices', 'solution for injection pre-filled pen', '250micrograms/0.19ml', NULL, 4, 'Inject 0.25mg under the skin once weekly'),
  ('39929911000001106', 2, 'Semaglutide 1mg/0.75ml solution for injection 3ml pre-filled disposable devices', 'solution for injection pre-filled pen', '1mg/0.75ml', NULL, 4, 'Inject 1mg under the skin once weekly'),
  ('43003211000001108', 3, 'Tirzepatide 2.5mg/0.5ml solution for injection pre-filled disposable devices', 'solution for injection pre-filled pen', '2.5mg/0.5ml', NULL, 4, 'Inject 2.5mg under the skin once weekly'),
  ('43003311000001101', 4, 'Tirzepatide 5mg/0.5ml solution for injection pre-filled disposable devices', 'solution for injection pre-filled pen', '5mg/0.5ml', NULL, 4, 'Inject 5mg under the skin once weekly'),
  ('36447711000001109', 5, 'Liraglutide 6mg/ml solution for injection 3ml pre-filled disposable devices', 'solution for injection pre-filled pen', '6mg/ml', NULL, 5, 'Inject 0.6mg daily, increasing weekly as directed'),
  ('319984000', 6, 'Orlistat 120mg capsules', 'capsule', '120mg', NULL, 84, 'Take one capsule three times a day with meals'),
  ('317896006', 7, 'Metformin 500mg tablets', 'tablet', '500mg', NULL, 56, 'Take one tablet twice a day with food'),
  ('323509004', 8, 'Amoxicillin 500mg capsules', 'capsule', '500mg', NULL, 21, 'Take one capsule three times a day'),
  ('317331001', 9, 'Omeprazole 20mg gastro-resistant capsules', 'gastro-resistant capsule', '20mg', NULL, 28, 'Take one capsule each morning'),
  ('320000009', 10, 'Atorvastatin 20mg tablets', 'tablet', '20mg', NULL, 28, 'Take one tablet at night'),
  ('321944000', 11, 'Sertraline 50mg tablets', 'tablet', '50mg', NULL, 28, 'Take one tablet each morning'),
  ('320176004', 12, 'Salbutamol 100micrograms/dose inhaler CFC free', 'pressurised inhalation', '100micrograms/dose', NULL, 1, 'Inhale two puffs when required'),
  ('324252006', 13, 'Ondansetron 4mg orodispersible tablets sugar free', 'orodispersible tablet', '4mg', NULL, 10, 'Dissolve one tablet on the tongue when required for nausea'),
  ('320148001', 14, 'Sildenafil 50mg tablets', 'tablet', '50mg', NULL, 4, 'Take one tablet one hour before sexual activity'),
  ('41944111000001103', 15, 'Finasteride 1mg tablets', 'tablet', '1mg', NULL, 28, 'Take one tablet daily'),
  ('327096008', 16, 'Levonorgestrel 1.5mg tablets', 'tablet', '1.5mg', NULL, 1, 'Take one tablet as soon as possible'),
  ('321211002', 17, 'Diazepam 2mg tablets', 'tablet', '2mg', '4', 14, 'Take one tablet three times a day when required'),
  ('322503009', 18, 'Morphine sulfate 10mg/5ml oral solution', 'oral solution', '10mg/5ml', '2', 100, 'Take 2.5ml to 5ml every four hours when required'),
  ('322773001', 19, 'Oxycodone 5mg capsules', 'capsule', '5mg', '2', 28, 'Take one capsule every six hours when required'),
  ('321217004', 20, 'Temazepam 10mg tablets', 'tablet', '10mg', '3', 7, 'Take one tablet at night when required')
ON CONFLICT DO NOTHING;

-- Patients (fictional). Region B patients' details travel in the platform payload.
INSERT INTO patients (external_ref, region_code, first_name, last_name, gender, date_of_birth, email, phone, address_line1, address_line2, city, post_code, country) VALUES
  ('pt-0001', 'B', 'Amelia', 'Hughes', 'female', '1984-03-07', 'amelia.hughes@patient.example.test', '07700 900123', '12 Alma Road', '', 'Bristol', 'BS8 2BY', 'United Kingdom'),
  ('pt-0002', 'B', 'Oliver', 'Bennett', 'male', '1979-11-21', 'oliver.bennett@patient.example.test', '07700 900456', '3 Mount Pleasant', 'Flat 2', 'Leeds', 'LS7 3DS', 'United Kingdom'),
  ('pt-0003', 'B', 'Isla', 'Morgan', 'female', '1991-06-30', 'isla.morgan@patient.example.test', '+44 7700 900789', '44 Cathedral Road', '', 'Cardiff', 'CF11 9LL', 'United Kingdom'),
  ('pt-0004', 'B', 'Noah', 'Campbell', 'male', '1968-01-15', 'noah.campbell@patient.example.test', '07700 900321', '18 Marchmont Crescent', '', 'Edinburgh', 'EH9 1HN', 'United Kingdom'),
  ('pt-0005', 'B', 'Sophia', 'Ahmed', 'female', '1995-09-02', 'sophia.ahmed@patient.example.test', '07700900654', '71 Wilmslow Road', '', 'Manchester', 'M14 5TB', 'United Kingdom'),
  ('pt-0006', 'B', 'George', 'Walsh', 'male', '1973-04-18', 'george.walsh@patient.example.test', '07700 900987', '9 Sefton Park Road', '', 'Liverpool', 'L8 3SL', 'United Kingdom'),
  ('pt-0007', 'B', 'Freya', 'O''Connor', 'female', '1988-12-09', 'freya.oconnor@patient.example.test', '07700 900135', '26 Osborne Road', '', 'Newcastle upon Tyne', 'NE2 2AJ', 'United Kingdom'),
  ('pt-0008', 'B', 'Arthur', 'Singh', 'male', '1959-07-25', 'arthur.singh@patient.example.test', '07700 900246', '5 Harborne Road', '', 'Birmingham', 'B15 3BU', 'United Kingdom'),
  ('pt-0009', 'B', 'Ava', 'Thompson', 'female', '2001-02-14', 'ava.thompson@patient.example.test', '07700 900357', '63 Mansfield Road', '', 'Nottingham', 'NG5 2BB', 'United Kingdom'),
  ('pt-0010', 'B', 'Leo', 'Davies', 'male', '1982-08-08', 'leo.davies@patient.example.test', '07700 900468', '110 Ecclesall Road', '', 'Sheffield', 'S11 8HY', 'United Kingdom'),
  ('pt-0011', 'B', 'Grace', 'Kaur', 'female', '1977-05-19', 'grace.kaur@patient.example.test', '07700 900579', '2 Clarence Parade', '', 'Cheltenham', 'GL50 3PA', 'United Kingdom'),
  ('pt-0012', 'B', 'Harry', 'Robinson', 'male', '1990-10-03', 'harry.robinson@patient.example.test', '07700 900680', '47 Mill Road', '', 'Cambridge', 'CB1 2AW', 'United Kingdom'),
  ('pt-0013', 'B', 'Mia', 'Evans', 'other', '1986-03-27', 'mia.evans@patient.example.test', '07700 900791', '8 Walcot Street', '', 'Bath', 'BA1 5BG', 'United Kingdom'),
  ('pt-0014', 'B', 'Jack', 'Murphy', 'male', '1965-12-31', 'jack.murphy@patient.example.test', '07700 900802', '31 Great Western Road', '', 'Glasgow', 'G12 8QB', 'United Kingdom'),
  ('pt-0015', 'B', 'Emily', 'Clarke', 'female', '1999-04-11', 'emily.clarke@patient.example.test', '07700 900913', '15 Canal Street', '', 'Oxford', 'OX2 6BH', 'United Kingdom'),
  ('pt-0016', 'B', 'Thomas', 'Wright', 'male', '1971-09-09', 'thomas.wright@patient.example.test', '07700 900024', '52 Lark Lane', '', 'Liverpool', 'L17 8UU', 'United Kingdom'),
  ('pt-0017', 'A', 'Ciara', 'McLaughlin', 'female', '1983-07-13', 'ciara.mclaughlin@patient.example.test', '07700 900135', '20 Malone Road', '', 'Belfast', 'BT9 5BN', 'United Kingdom'),
  ('pt-0018', 'A', 'Conor', 'Quinn', 'male', '1976-02-28', 'conor.quinn@patient.example.test', '07700 900146', '7 Bishop Street', '', 'Londonderry', 'BT48 6PR', 'United Kingdom'),
  ('pt-0019', 'A', 'Aoife', 'Kelly', 'female', '1993-11-05', 'aoife.kelly@patient.example.test', '07700 900157', '88 Main Street', '', 'Bangor', 'BT20 4AG', 'United Kingdom'),
  ('pt-0020', 'A', 'Ryan', 'Doherty', 'male', '1969-06-22', 'ryan.doherty@patient.example.test', '07700 900168', '14 Scotch Street', '', 'Armagh', 'BT61 7BY', 'United Kingdom'),
  ('pt-0021', 'A', 'Niamh', 'Byrne', 'female', '1987-01-17', 'niamh.byrne@patient.example.test', '07700 900179', '3 Queen Street', '', 'Ballymena', 'BT42 1BD', 'United Kingdom'),
  ('pt-0022', 'A', 'Sean', 'Gallagher', 'male', '1961-10-10', 'sean.gallagher@patient.example.test', '07700 900180', '61 High Street', '', 'Omagh', 'BT78 1BA', 'United Kingdom'),
  ('pt-0023', 'A', 'Erin', 'Stewart', 'female', '1997-08-29', 'erin.stewart@patient.example.test', '07700 900191', '25 Church Street', '', 'Portadown', 'BT62 3LQ', 'United Kingdom'),
  ('pt-0024', 'A', 'Patrick', 'Moore', 'male', '1980-05-05', 'patrick.moore@patient.example.test', '07700 900202', '10 Castle Street', '', 'Newry', 'BT34 1DN', 'United Kingdom')
ON CONFLICT DO NOTHING;

-- What the Region A prescription prints (Human Medicines Regulations 2012, reg. 217):
-- the clinic's address and telephone, each prescriber's register (GMC, GPhC or NMC),
-- number and practice address, and each VMP's dm+d unit of measure. UPDATEs, so that a
-- database seeded before these columns existed gets them on the next `flask seed`.
-- Registration numbers are fictional; the telephone is in Ofcom's drama range.
UPDATE clinics SET address = '10 Harley Street, London W1G 9PF', phone = '020 7946 0123'
  WHERE display_id = '201334' AND address IS NULL;
UPDATE prescribers SET registration_body = 'GMC', registration_number = '7012345',
  address = '10 Harley Street, London W1G 9PF'
  WHERE platform_prescriber_id = 5531 AND registration_number IS NULL;
UPDATE prescribers SET registration_body = 'GMC', registration_number = '7023456',
  address = '10 Harley Street, London W1G 9PF'
  WHERE platform_prescriber_id = 5532 AND registration_number IS NULL;
UPDATE medicines SET unit_of_measure = 'pre-filled disposable injection'
  WHERE seq_no BETWEEN 1 AND 5 AND unit_of_measure IS NULL;
UPDATE medicines SET unit_of_measure = 'capsule' WHERE seq_no IN (6, 8, 19) AND unit_of_measure IS NULL;
UPDATE medicines SET unit_of_measure = 'gastro-resistant capsule' WHERE seq_no = 9 AND unit_of_measure IS NULL;
UPDATE medicines SET unit_of_measure = 'tablet'
  WHERE seq_no IN (7, 10, 11, 14, 15, 16, 17, 20) AND unit_of_measure IS NULL;
UPDATE medicines SET unit_of_measure = 'inhaler' WHERE seq_no = 12 AND unit_of_measure IS NULL;
UPDATE medicines SET unit_of_measure = 'orodispersible tablet' WHERE seq_no = 13 AND unit_of_measure IS NULL;
UPDATE medicines SET unit_of_measure = 'ml' WHERE seq_no = 18 AND unit_of_measure IS NULL;
