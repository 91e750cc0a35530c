--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: rowsync_direct_contacts(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.rowsync_direct_contacts() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN IF TG_OP <> 'INSERT' THEN INSERT INTO "public".rowsync_direct (tbl, pk, at) VALUES ('contacts', json_build_array(OLD."id")::text, (extract(epoch from clock_timestamp()) * 1000)::bigint); END IF; IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND (NEW."id" IS DISTINCT FROM OLD."id")) THEN INSERT INTO "public".rowsync_direct (tbl, pk, at) VALUES ('contacts', json_build_array(NEW."id")::text, (extract(epoch from clock_timestamp()) * 1000)::bigint); END IF; RETURN NULL; END $$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: contacts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.contacts (
    id text NOT NULL,
    name text NOT NULL,
    email text,
    phone text
);


--
-- Name: rowsync_direct; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rowsync_direct (
    id bigint NOT NULL,
    tbl text NOT NULL,
    pk text NOT NULL,
    at bigint NOT NULL
);


--
-- Name: rowsync_direct_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.rowsync_direct_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: rowsync_direct_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.rowsync_direct_id_seq OWNED BY public.rowsync_direct.id;


--
-- Name: rowsync_meta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rowsync_meta (
    key text NOT NULL,
    value text NOT NULL
);


--
-- Name: rowsync_positions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rowsync_positions (
    id integer NOT NULL,
    last bigint NOT NULL,
    CONSTRAINT rowsync_positions_id_check CHECK ((id = 1))
);


--
-- Name: rowsync_rows; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rowsync_rows (
    tbl text NOT NULL,
    pk text NOT NULL,
    pos bigint NOT NULL,
    state text NOT NULL,
    origin text,
    size bigint,
    owner text
);


--
-- Name: rowsync_sites; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rowsync_sites (
    site text NOT NULL,
    hwm bigint NOT NULL,
    batch bigint,
    usr text
);


--
-- Name: rowsync_tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rowsync_tokens (
    id text NOT NULL,
    usr text NOT NULL,
    hash text NOT NULL,
    created bigint NOT NULL,
    expires bigint,
    revoked bigint
);


--
-- Name: rowsync_direct id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rowsync_direct ALTER COLUMN id SET DEFAULT nextval('public.rowsync_direct_id_seq'::regclass);


--
-- Data for Name: contacts; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.contacts VALUES ('c1', 'Ada', 'ada@example.com', '111');
INSERT INTO public.contacts VALUES ('c2', 'Bo', NULL, '222');
INSERT INTO public.contacts VALUES ('c3', 'Cy', 'cy@example.com', NULL);


--
-- Data for Name: rowsync_direct; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rowsync_meta; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.rowsync_meta VALUES ('format', '1');
INSERT INTO public.rowsync_meta VALUES ('schema', '{"version":1,"tables":[{"name":"contacts","columns":[{"name":"id","type":"TEXT","not_null":true},{"name":"name","type":"TEXT","not_null":true},{"name":"email","type":"TEXT","not_null":false},{"name":"phone","type":"TEXT","not_null":false}],"primary_key":[0],"conflict":"field"}]}');


--
-- Data for Name: rowsync_positions; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.rowsync_positions VALUES (1, 3);


--
-- Data for Name: rowsync_rows; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.rowsync_rows VALUES ('contacts', '["c1"]', 1, '{"table":"contacts","key":["c1"],"alive":{"hlc":117723838578688000,"site":"aac2a0c06df9bae218ebee3c4f34e9b8"},"version":{"hlc":117723838578688000,"site":"aac2a0c06df9bae218ebee3c4f34e9b8"},"cells":[{"column":"name","value":"Ada"},{"column":"email","value":"ada@example.com"},{"column":"phone","value":"111"}]}', 'aac2a0c06df9bae218ebee3c4f34e9b8', 309, NULL);
INSERT INTO public.rowsync_rows VALUES ('contacts', '["c2"]', 2, '{"table":"contacts","key":["c2"],"alive":{"hlc":117723838578753536,"site":"aac2a0c06df9bae218ebee3c4f34e9b8"},"version":{"hlc":117723838578753536,"site":"aac2a0c06df9bae218ebee3c4f34e9b8"},"cells":[{"column":"name","value":"Bo"},{"column":"email","value":null},{"column":"phone","value":"222"}]}', 'aac2a0c06df9bae218ebee3c4f34e9b8', 295, NULL);
INSERT INTO public.rowsync_rows VALUES ('contacts', '["c3"]', 3, '{"table":"contacts","key":["c3"],"alive":{"hlc":117723838578753537,"site":"aac2a0c06df9bae218ebee3c4f34e9b8"},"version":{"hlc":117723838578753537,"site":"aac2a0c06df9bae218ebee3c4f34e9b8"},"cells":[{"column":"name","value":"Cy"},{"column":"email","value":"cy@example.com"},{"column":"phone","value":null}]}', 'aac2a0c06df9bae218ebee3c4f34e9b8', 306, NULL);


--
-- Data for Name: rowsync_sites; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.rowsync_sites VALUES ('aac2a0c06df9bae218ebee3c4f34e9b8', 3, 8045234001114609, NULL);


--
-- Data for Name: rowsync_tokens; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Name: rowsync_direct_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.rowsync_direct_id_seq', 1, false);


--
-- Name: contacts contacts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.contacts
    ADD CONSTRAINT contacts_pkey PRIMARY KEY (id);


--
-- Name: rowsync_direct rowsync_direct_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rowsync_direct
    ADD CONSTRAINT rowsync_direct_pkey PRIMARY KEY (id);


--
-- Name: rowsync_meta rowsync_meta_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rowsync_meta
    ADD CONSTRAINT rowsync_meta_pkey PRIMARY KEY (key);


--
-- Name: rowsync_positions rowsync_positions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rowsync_positions
    ADD CONSTRAINT rowsync_positions_pkey PRIMARY KEY (id);


--
-- Name: rowsync_rows rowsync_rows_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rowsync_rows
    ADD CONSTRAINT rowsync_rows_pkey PRIMARY KEY (tbl, pk);


--
-- Name: rowsync_sites rowsync_sites_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rowsync_sites
    ADD CONSTRAINT rowsync_sites_pkey PRIMARY KEY (site);


--
-- Name: rowsync_tokens rowsync_tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rowsync_tokens
    ADD CONSTRAINT rowsync_tokens_pkey PRIMARY KEY (id);


--
-- Name: rowsync_rows_pos; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX rowsync_rows_pos ON public.rowsync_rows USING btree (pos);


--
-- Name: contacts rowsync_direct; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER rowsync_direct AFTER INSERT OR DELETE OR UPDATE ON public.contacts FOR EACH ROW WHEN ((current_setting('rowsync.applying'::text, true) IS DISTINCT FROM 'on'::text)) EXECUTE FUNCTION public.rowsync_direct_contacts();


--
-- PostgreSQL database dump complete
--


