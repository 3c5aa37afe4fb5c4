// A downstream JVM app as users write it: Kafka's consumer with Apicurio's Avro deserializer, which
// reads the schema-registry framing (byte 0, 4-byte content id, body) and fetches each writer schema
// from the registry by id. Reads every partition of the given topics from the beginning to the end
// offsets seen at start and prints one JSON line per record: topic, partition, offset and the
// decoded record (Avro's own JSON rendering of a GenericRecord).
//
// Run as a single-file program: java -cp 'lib/*' RegistryConsumer.java BOOTSTRAP REGISTRY_V3_URL TOPIC...
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.avro.generic.GenericData;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class RegistryConsumer {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, "io.apicurio.registry.serde.avro.AvroKafkaDeserializer");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put("apicurio.registry.url", args[1]);
        try (KafkaConsumer<byte[], Object> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> partitions = new ArrayList<>();
            for (int i = 2; i < args.length; i++) {
                for (PartitionInfo info : consumer.partitionsFor(args[i], Duration.ofSeconds(30))) {
                    partitions.add(new TopicPartition(info.topic(), info.partition()));
                }
            }
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Map<TopicPartition, Long> end = new HashMap<>(consumer.endOffsets(partitions));
            long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
            StringBuilder out = new StringBuilder();
            while (!end.isEmpty() && System.nanoTime() < deadline) {
                end.entrySet().removeIf(e -> consumer.position(e.getKey()) >= e.getValue());
                for (ConsumerRecord<byte[], Object> r : consumer.poll(Duration.ofMillis(500))) {
                    out.setLength(0);
                    out.append("{\"topic\":\"").append(r.topic()).append("\",\"partition\":").append(r.partition())
                       .append(",\"offset\":").append(r.offset()).append(",\"value\":")
                       .append(GenericData.get().toString(r.value())).append('}');
                    System.out.println(out);
                }
            }
            if (!end.isEmpty()) {
                System.err.println("not read to the end in 120 s: " + end);
                System.exit(1);
            }
        }
    }
}
