/*M!999999\- enable the sandbox mode */ 

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;
DROP TABLE IF EXISTS `contacts`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `contacts` (
  `id` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `name` text NOT NULL,
  `email` text DEFAULT NULL,
  `phone` text DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

LOCK TABLES `contacts` WRITE;
/*!40000 ALTER TABLE `contacts` DISABLE KEYS */;
INSERT INTO `contacts` VALUES
('c1','Ada','ada@example.com','111'),
('c2','Bo',NULL,'222'),
('c3','Cy','cy@example.com',NULL);
/*!40000 ALTER TABLE `contacts` ENABLE KEYS */;
UNLOCK TABLES;
/*!50003 SET @saved_cs_client      = @@character_set_client */ ;
/*!50003 SET @saved_cs_results     = @@character_set_results */ ;
/*!50003 SET @saved_col_connection = @@collation_connection */ ;
/*!50003 SET character_set_client  = utf8mb4 */ ;
/*!50003 SET character_set_results = utf8mb4 */ ;
/*!50003 SET collation_connection  = utf8mb4_unicode_ci */ ;
/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;
/*!50003 SET sql_mode              = 'PIPES_AS_CONCAT,IGNORE_SPACE,STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION' */ ;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `rowsync_i_contacts` AFTER INSERT ON `contacts` FOR EACH ROW BEGIN IF @rowsync_applying IS NULL THEN INSERT INTO rowsync_direct (tbl, pk, at) VALUES ('contacts', JSON_ARRAY(NEW.`id`), CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)); END IF; END 
*/;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;
/*!50003 SET character_set_client  = @saved_cs_client */ ;
/*!50003 SET character_set_results = @saved_cs_results */ ;
/*!50003 SET collation_connection  = @saved_col_connection */ ;
/*!50003 SET @saved_cs_client      = @@character_set_client */ ;
/*!50003 SET @saved_cs_results     = @@character_set_results */ ;
/*!50003 SET @saved_col_connection = @@collation_connection */ ;
/*!50003 SET character_set_client  = utf8mb4 */ ;
/*!50003 SET character_set_results = utf8mb4 */ ;
/*!50003 SET collation_connection  = utf8mb4_unicode_ci */ ;
/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;
/*!50003 SET sql_mode              = 'PIPES_AS_CONCAT,IGNORE_SPACE,STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION' */ ;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `rowsync_u_contacts` AFTER UPDATE ON `contacts` FOR EACH ROW BEGIN IF @rowsync_applying IS NULL THEN INSERT INTO rowsync_direct (tbl, pk, at) VALUES ('contacts', JSON_ARRAY(OLD.`id`), CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)); IF NOT (NEW.`id` <=> OLD.`id`) THEN INSERT INTO rowsync_direct (tbl, pk, at) VALUES ('contacts', JSON_ARRAY(NEW.`id`), CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)); END IF; END IF; END 
*/;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;
/*!50003 SET character_set_client  = @saved_cs_client */ ;
/*!50003 SET character_set_results = @saved_cs_results */ ;
/*!50003 SET collation_connection  = @saved_col_connection */ ;
/*!50003 SET @saved_cs_client      = @@character_set_client */ ;
/*!50003 SET @saved_cs_results     = @@character_set_results */ ;
/*!50003 SET @saved_col_connection = @@collation_connection */ ;
/*!50003 SET character_set_client  = utf8mb4 */ ;
/*!50003 SET character_set_results = utf8mb4 */ ;
/*!50003 SET collation_connection  = utf8mb4_unicode_ci */ ;
/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;
/*!50003 SET sql_mode              = 'PIPES_AS_CONCAT,IGNORE_SPACE,STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION' */ ;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `rowsync_d_contacts` AFTER DELETE ON `contacts` FOR EACH ROW BEGIN IF @rowsync_applying IS NULL THEN INSERT INTO rowsync_direct (tbl, pk, at) VALUES ('contacts', JSON_ARRAY(OLD.`id`), CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)); END IF; END 
*/;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;
/*!50003 SET character_set_client  = @saved_cs_client */ ;
/*!50003 SET character_set_results = @saved_cs_results */ ;
/*!50003 SET collation_connection  = @saved_col_connection */ ;
DROP TABLE IF EXISTS `rowsync_direct`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `rowsync_direct` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `tbl` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `pk` text CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `at` bigint(20) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

LOCK TABLES `rowsync_direct` WRITE;
/*!40000 ALTER TABLE `rowsync_direct` DISABLE KEYS */;
/*!40000 ALTER TABLE `rowsync_direct` ENABLE KEYS */;
UNLOCK TABLES;
DROP TABLE IF EXISTS `rowsync_meta`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `rowsync_meta` (
  `key` varchar(64) NOT NULL,
  `value` longtext NOT NULL,
  PRIMARY KEY (`key`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

LOCK TABLES `rowsync_meta` WRITE;
/*!40000 ALTER TABLE `rowsync_meta` DISABLE KEYS */;
INSERT INTO `rowsync_meta` VALUES
('format','1'),
('schema','{\"version\":1,\"tables\":[{\"name\":\"contacts\",\"columns\":[{\"name\":\"id\",\"type\":\"TEXT\",\"not_null\":true},{\"name\":\"name\",\"type\":\"TEXT\",\"not_null\":true},{\"name\":\"email\",\"type\":\"TEXT\",\"not_null\":false},{\"name\":\"phone\",\"type\":\"TEXT\",\"not_null\":false}],\"primary_key\":[0],\"conflict\":\"field\"}]}');
/*!40000 ALTER TABLE `rowsync_meta` ENABLE KEYS */;
UNLOCK TABLES;
DROP TABLE IF EXISTS `rowsync_positions`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `rowsync_positions` (
  `id` int(11) NOT NULL,
  `last` bigint(20) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
/*!40101 SET character_set_client = @saved_cs_client */;

LOCK TABLES `rowsync_positions` WRITE;
/*!40000 ALTER TABLE `rowsync_positions` DISABLE KEYS */;
INSERT INTO `rowsync_positions` VALUES
(1,3);
/*!40000 ALTER TABLE `rowsync_positions` ENABLE KEYS */;
UNLOCK TABLES;
DROP TABLE IF EXISTS `rowsync_rows`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `rowsync_rows` (
  `tbl` varchar(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `pk` varchar(750) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `pos` bigint(20) NOT NULL,
  `state` longtext NOT NULL,
  `origin` char(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `size` bigint(20) DEFAULT NULL,
  `owner` varchar(64) CHARACTER SET ascii COLLATE ascii_general_ci DEFAULT NULL,
  PRIMARY KEY (`tbl`,`pk`),
  UNIQUE KEY `rowsync_rows_pos` (`pos`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

LOCK TABLES `rowsync_rows` WRITE;
/*!40000 ALTER TABLE `rowsync_rows` DISABLE KEYS */;
INSERT INTO `rowsync_rows` VALUES
('contacts','[\"c1\"]',1,'{\"table\":\"contacts\",\"key\":[\"c1\"],\"alive\":{\"hlc\":117723838600839168,\"site\":\"e16fb252f3b7bbcad99d71c8714a9966\"},\"version\":{\"hlc\":117723838600839168,\"site\":\"e16fb252f3b7bbcad99d71c8714a9966\"},\"cells\":[{\"column\":\"name\",\"value\":\"Ada\"},{\"column\":\"email\",\"value\":\"ada@example.com\"},{\"column\":\"phone\",\"value\":\"111\"}]}','e16fb252f3b7bbcad99d71c8714a9966',309,NULL),
('contacts','[\"c2\"]',2,'{\"table\":\"contacts\",\"key\":[\"c2\"],\"alive\":{\"hlc\":117723838600904704,\"site\":\"e16fb252f3b7bbcad99d71c8714a9966\"},\"version\":{\"hlc\":117723838600904704,\"site\":\"e16fb252f3b7bbcad99d71c8714a9966\"},\"cells\":[{\"column\":\"name\",\"value\":\"Bo\"},{\"column\":\"email\",\"value\":null},{\"column\":\"phone\",\"value\":\"222\"}]}','e16fb252f3b7bbcad99d71c8714a9966',295,NULL),
('contacts','[\"c3\"]',3,'{\"table\":\"contacts\",\"key\":[\"c3\"],\"alive\":{\"hlc\":117723838600904705,\"site\":\"e16fb252f3b7bbcad99d71c8714a9966\"},\"version\":{\"hlc\":117723838600904705,\"site\":\"e16fb252f3b7bbcad99d71c8714a9966\"},\"cells\":[{\"column\":\"name\",\"value\":\"Cy\"},{\"column\":\"email\",\"value\":\"cy@example.com\"},{\"column\":\"phone\",\"value\":null}]}','e16fb252f3b7bbcad99d71c8714a9966',306,NULL);
/*!40000 ALTER TABLE `rowsync_rows` ENABLE KEYS */;
UNLOCK TABLES;
DROP TABLE IF EXISTS `rowsync_sites`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `rowsync_sites` (
  `site` char(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `hwm` bigint(20) NOT NULL,
  `batch` bigint(20) DEFAULT NULL,
  `usr` varchar(64) CHARACTER SET ascii COLLATE ascii_general_ci DEFAULT NULL,
  PRIMARY KEY (`site`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

LOCK TABLES `rowsync_sites` WRITE;
/*!40000 ALTER TABLE `rowsync_sites` DISABLE KEYS */;
INSERT INTO `rowsync_sites` VALUES
('e16fb252f3b7bbcad99d71c8714a9966',3,2661801533038348,NULL);
/*!40000 ALTER TABLE `rowsync_sites` ENABLE KEYS */;
UNLOCK TABLES;
DROP TABLE IF EXISTS `rowsync_tokens`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `rowsync_tokens` (
  `id` char(16) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  `usr` varchar(64) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  `hash` char(64) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  `created` bigint(20) NOT NULL,
  `expires` bigint(20) DEFAULT NULL,
  `revoked` bigint(20) DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

LOCK TABLES `rowsync_tokens` WRITE;
/*!40000 ALTER TABLE `rowsync_tokens` DISABLE KEYS */;
/*!40000 ALTER TABLE `rowsync_tokens` ENABLE KEYS */;
UNLOCK TABLES;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

